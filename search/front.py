"""The front of a search: the feasible non-dominated trials, each made deployable by its protocol
(retrained on every speaker, or the trial's own model tested once) and checked by the numpy
reference. search.report writes what the front holds."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from fsdd.errors import ArtifactError, ConfigError
from search.fit import quiet
from search.protocol import protocol_for
from search.schema import Budget, Refit, TrialRecord
from search.selection import pareto_front


@dataclass(frozen=True)
class Member:
    """A front member made deployable: its trial's record, the folder holding its model.safetensors
    and predictions.json, and how that model was made and checked."""

    record: TrialRecord
    folder: Path
    refit: Refit


def choose(records: Sequence[TrialRecord], budget: Budget) -> list[TrialRecord]:
    """The feasible (within the budget) non-dominated records, cheapest first (search.selection)."""
    return pareto_front([r for r in records if r.cost_bytes <= budget.bytes])


def deployable(record: TrialRecord, trial_dir: Path, refit_dir: Path, data: Any, cache_dir: str | None) -> tuple[Path, Refit] | None:
    """One member made deployable by its protocol, or None after a one-line warning when its files
    in the run are damaged or gone (that member is left out, not the front). Unusable data (a
    DataError) stops the export: the front would be rebuilt from other data than the run's."""
    quiet()
    try:
        return protocol_for(record.config).deployable(record, trial_dir, refit_dir, data, cache_dir)
    except (ArtifactError, ConfigError, OSError, SafetensorError) as e:
        print(f"warning: {trial_dir.name}: {str(e).splitlines()[0]}; left out of the front", file=sys.stderr)
        return None


def make_deployable(front: Sequence[TrialRecord], run_dir: Path, data: Any, cache_dir: str | None, workers: int) -> list[Member]:
    """`deployable` of every member, `workers` at a time in fresh processes (spawned: the driver's
    torch state is not forked), in front order; members that could not be made are left out."""
    jobs = [(r, run_dir / "trials" / r.trial_name, run_dir / "refit" / r.trial_name, data, cache_dir) for r in front]
    if workers <= 1 or len(jobs) <= 1:
        done = [deployable(*j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(deployable, *zip(*jobs, strict=True)))
    return [Member(r, *d) for r, d in zip(front, done, strict=True) if d is not None]
