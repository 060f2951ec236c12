"""The project's one error tree and the one command-line wrapper that prints it.

Every error here is a user's mistake or an input the program cannot use (a file, a field, a
flag, a missing tool): each command prints it as `error: <one line>` and exits with status 2.
Anything else is a bug and keeps its traceback. Subclasses exist only where a caller must tell
them apart; the root is what every command catches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

MESSAGE_MAX = 400  # characters: a value quoted in a message may be huge (YAML anchors nest cheaply)


class Error(Exception):
    """A user's mistake or an unusable input, said in one line (newlines are folded, the length capped)."""

    def __init__(self, message: str) -> None:
        line = " ".join(str(message).split())
        super().__init__(line if len(line) <= MESSAGE_MAX else line[: MESSAGE_MAX - 3] + "...")


class DataError(Error):
    """Missing, corrupt or unexpected data: a folder, a wav file, an archive, a split or speaker name."""


class ConfigError(Error):
    """A malformed configuration or settings file; the message names the offending field."""


class ArtifactError(Error):
    """An artifact that cannot be used: not safetensors, truncated, another format, or values that lie."""


class DeployError(Error):
    """A C library that cannot be written, built or run: a folder, a toolchain, an unsupported model."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose command-line mistakes end in one line, like every other input error (not usage + error)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


EMPTY_PATH = "an empty path (name a folder; '.' for the current one)"  # it would silently mean the current folder


def path_arg(text: str) -> str:
    """An argparse `type` for a path a user types: refuses an empty one, which would silently
    mean the current folder (`--cache-dir ""` would fill it)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(EMPTY_PATH)
    return text


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's `main(argv)`: an Error, or an OSError on a path the user gave (a file where a
    folder must be, a name too long, a full disk), prints `error: ...` in one line and returns 2;
    Ctrl-C returns 130; anything else propagates with its traceback."""
    try:
        return main(argv) or 0
    except Error as e:
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 2
