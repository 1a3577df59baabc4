"""Training without Ray: losses, loss weighting, the fit/train_step/evaluate loop, checkpoints."""
