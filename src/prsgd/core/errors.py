"""Exceptions shared by the configuration and the algorithms (kept apart to avoid import cycles)."""


class ConfigError(ValueError):
    """A user-facing configuration error; the message names the argument and what is allowed."""
