"""Scaling studies: the grid (plan), its inputs (prepare), trials on Ray Tune (grid, trial), the report."""
