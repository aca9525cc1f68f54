"""The run directory: its files, checkpoint state, run policy, ownership lock, result loading."""
