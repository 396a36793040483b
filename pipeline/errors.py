"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad path, bad config value, missing Java): shown as one line."""


class ConfigError(UserError):
    """The run config is invalid; the message names the bad key."""
