"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad path, bad config value, missing Java): shown as one line."""


class ConfigError(UserError):
    """The run config is invalid; the message names the bad key."""


# Why an input file is unusable (recorded reasons and error texts use these words).
EMPTY, NOT_FORMAT, TRUNCATED, WRONG_SCHEMA, UNREADABLE = "empty", "not_format", "truncated", "wrong_schema", "unreadable"


class InputFileError(UserError):
    """An input file a stage cannot use and must not skip: the message names the file and what is wrong."""

    def __init__(self, path: str, reason: str, detail: str, what: str = "input"):
        self.path, self.reason = path, reason
        super().__init__(f"{what} {path}: {detail}")


class TarFormatError(ValueError):
    """A tar header that is not one (bad checksum, unreadable number)."""
