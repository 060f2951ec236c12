"""The one error type for bad data input: the CLIs print it as a single line."""


class DataError(Exception):
    """Missing, corrupt or unexpected data (directory, wav file, archive, split name)."""
