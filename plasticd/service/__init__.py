"""The service around one Engine: assembly, the worker loop, file claims, checkpoints, predictions, status, scheduling."""
