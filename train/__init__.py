"""train: config schema, the one training loop, losses, distributed gather, gradient cache, sampler, checkpoints."""
