"""Exceptions shared by the configuration modules (kept apart so that config.py and config_yaml.py need not import
each other)."""


class ConfigError(ValueError):
    """A configuration problem; the message names the file and key."""
