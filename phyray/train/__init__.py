"""Training on Ray Train + DeepSpeed: the worker loop, the driver, checkpoints and in-run evaluation."""
