"""Readers and synthetic writers of the workloads' real on-disk formats."""
