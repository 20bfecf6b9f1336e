"""Training and using a model: the trainer (bursts, evaluation, divergence rollback),
datasets, inference from a checkpoint and the metrics. Built on the core and storage;
knows nothing of hardware or the service."""
