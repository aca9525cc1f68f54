"""Launching and supervising ranks: launcher commands, host lists, process supervision."""
