"""Training: one run = engine + task + pipeline + schedulers, writing the run files."""
