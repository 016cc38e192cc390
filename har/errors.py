"""Domain errors. Every CLI maps a `HarError` to exit code 2 and prints its message as one line."""


class HarError(Exception):
    """A user-facing problem (bad path, bad option, unusable data). Never a bug."""

    exit_code = 2


class DataNotFoundError(HarError):
    """Expected data files are absent; the message names the expected path."""


class BadDataError(HarError):
    """A data file exists but holds nothing usable (empty, wrong columns)."""


class BadOptionError(HarError):
    """An option value that is not one of the documented choices."""
