"""A search's run folder: claimed atomically, locked for a process's life, and read back.

RUN/search.json holds the settings (search.schema.RunSettings), RUN/trials/NAME/ each trial's
outputs (record.json once it finished), RUN/refit/NAME/ the deployable models of the front, and
RUN/artifacts/ with RUN/pareto.* the exported front. Ray keeps its own state beside them. Only
one process works on a run at a time: the search (new or resumed) and an export hold RUN/.lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from pathlib import Path
from typing import IO

from fsdd.errors import ConfigError, Error
from fsdd.files import resolved
from search.schema import RunSettings, TrialRecord, read_json_shape, write_shape

SETTINGS = "search.json"
LOCK = ".lock"

_held: dict[Path, IO[str]] = {}  # run folders this process holds, with their open lock files


def claim(run_dir: Path) -> None:
    """Make `run_dir` as a new run and hold it: Error in one line if a run of that name exists, even
    one made a moment ago by another process (the folder is made atomically, then locked)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        raise Error(
            f"a run named {run_dir.name!r} already exists in {run_dir.parent}: add --resume to continue it, or pick another --name"
        ) from None
    hold(run_dir)


def hold(run_dir: Path) -> None:
    """Lock `run_dir` for this process's life (until `release`); Error in one line if another
    process holds it (a search still running, or an export). Holding it twice is a no-op."""
    run_dir = resolved(run_dir, "run folder")
    if run_dir in _held:
        return
    f = open(run_dir / LOCK, "a+")  # noqa: SIM115 - stays open while the lock is held
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise Error(f"run {run_dir} is in use by another process (a search or an export still running): wait for it to end") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held[run_dir] = f


def release(run_dir: Path, remove: bool = False) -> None:
    """Let go of `run_dir`; with `remove`, delete it first (a new run that never got going)."""
    run_dir = resolved(run_dir, "run folder")
    f = _held.pop(run_dir, None)
    if remove:
        shutil.rmtree(run_dir, ignore_errors=True)
    if f is not None:
        f.close()


def settings(run_dir: Path) -> RunSettings:
    """The run's settings; Error in one line if `run_dir` is not a run or its search.json is damaged."""
    path = run_dir / SETTINGS
    if not path.is_file():
        raise Error(f"{run_dir} is not a search run (no {SETTINGS})")
    try:
        return read_json_shape(RunSettings, path, "settings")
    except ConfigError as e:
        raise Error(f"{e}: the run cannot be resumed or exported by this version") from None


def write_settings(run_dir: Path, s: RunSettings) -> None:
    write_shape(run_dir / SETTINGS, s)
    (run_dir / "trials").mkdir(exist_ok=True)  # export refuses a run without it (its trials lost) rather than empty the front


def trials(run_dir: Path) -> Path:
    """The folder of the run's trials; Error if it is gone (nothing to resume or export: refused rather than an empty front)."""
    path = run_dir / "trials"
    if not path.is_dir():
        raise Error(f"{path}: missing or not a folder; the run's trials are gone")
    return path


def records(run_dir: Path) -> list[TrialRecord]:
    """Records of the trials that trained to the end. One that cannot be read (a trial killed while
    writing it, a file damaged since) is left out with a one-line warning, not the run."""
    out = []
    for f in sorted(trials(run_dir).glob("*/record.json")):
        try:
            out.append(read_json_shape(TrialRecord, f, "record"))
        except ConfigError as e:
            print(f"warning: {f.parent.name}: its record cannot be used ({e}); left out", file=sys.stderr)
    return out
