"""The one error type of search.deploy: a message of one line, printed as `error: ...` with exit status 2."""


class DeployError(Exception):
    """An artifact, output folder or toolchain that deploy cannot use; the message says why and what to do."""
