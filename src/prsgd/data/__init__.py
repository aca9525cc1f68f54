"""Datasets: sources (download, checks, cache) and the per-worker batch plan."""
