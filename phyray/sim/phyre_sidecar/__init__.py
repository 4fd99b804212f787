"""PHYRE sidecar program (sidecar.py + templates.py), run by the Python 3.9 of .venv-phyre.

Not imported by phyray: the main side starts `sidecar.py` as a subprocess and talks to it
through `phyray.sim.phyre`. This file only makes the directory a package so that the two
scripts ship with phyray.
"""
