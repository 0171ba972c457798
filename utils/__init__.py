"""Shared utilities: datasets, masking, metrics, checkpoints and the training engine."""
