"""Training: losses, configs, the training loop (torchrun/DDP ready) and checkpoints."""
