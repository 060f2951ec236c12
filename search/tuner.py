"""Ray Tune wiring of the search: Optuna searcher, early stopping, progress line, resume."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from search.config import from_dict
from search.space import SearchConfig, define, space_from_dict, start_points
from search.trainable import run_trial


class FinishedOnlyOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna only finished trainings as COMPLETE.

    Ray hands a trial stopped early (see DominatedAtRung) to the searcher as complete, with its early
    accuracy; in a multi-objective study that early point would look like a real trade-off.
    Here such a trial (no `final` flag in its last report) enters the study as PRUNED, and
    a trial that raised as FAIL, so neither misleads the sampler.
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if error or not (result and result.get("final")):
            result = None
        super().on_trial_complete(trial_id, result, error)


class DominatedAtRung(tune.Stopper):
    """Stops a trial at a rung (epochs r, 3r, 9r, ...) when at least `k` trials that are no
    larger already had a better validation accuracy at that rung: it is then unlikely to
    reach the front. The multi-objective analogue of ASHA's rule; Ray's ASHA takes one
    metric and, on accuracy alone, stops every small model, which are half the front."""

    def __init__(self, first_rung: int, k: int = 2, factor: int = 3):
        self.first_rung, self.k, self.factor = first_rung, k, factor
        self.seen: dict[int, list[tuple[int, float]]] = {}

    def _is_rung(self, it: int) -> bool:
        r = self.first_rung
        while r < it:
            r *= self.factor
        return r == it

    def __call__(self, trial_id: str, result: dict) -> bool:
        it = result.get("training_iteration", 0)
        if result.get("final") or not self._is_rung(it):
            return False
        size, acc = result["size_bytes"], result["val_acc"]
        better = sum(1 for s, a in self.seen.get(it, []) if s <= size and a > acc)
        self.seen.setdefault(it, []).append((size, acc))
        return better >= self.k

    def stop_all(self) -> bool:
        return False


class Progress(tune.Callback):
    """One concise status line: trials done/running/early-stopped/infeasible/failed, the best
    feasible validation accuracy with its size, and the time left."""

    def __init__(self, trials: int, time_budget_s: float, every_s: float = 30.0):
        self.trials, self.time_budget_s, self.every_s = trials, time_budget_s, every_s
        self.deadline = time.time() + time_budget_s
        self.tty = sys.stdout.isatty()
        self._last_line, self._last_print = "", 0.0

    def setup(self, **info: Any) -> None:  # also on resume: the time budget starts again
        self.deadline = time.time() + self.time_budget_s

    def status(self, trials: list) -> str:
        done = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
        final = [t for t in done if t.status == "TERMINATED" and (t.last_result or {}).get("final")]
        infeasible = sum(1 for t in final if t.last_result.get("infeasible"))
        feasible = [t for t in final if not t.last_result.get("infeasible")]
        stopped = sum(1 for t in done if t.status == "TERMINATED" and not (t.last_result or {}).get("final"))
        failed = sum(1 for t in done if t.status == "ERROR")
        running = sum(1 for t in trials if t.status == "RUNNING")
        line = f"{len(done)}/{self.trials} done ({stopped} stopped early, {infeasible} infeasible, {failed} failed), {running} running"
        if feasible:
            best = max(feasible, key=lambda t: (t.last_result["val_acc"], -t.last_result["size_bytes"]))
            c = best.config
            quant = c["quant"] if c["quant"] != "qat" else f"qat{c['bits']}-{c['scale']}"
            kib = best.last_result["size_bytes"] / 1024
            line += f" | best val {best.last_result['val_acc']:.4f} at {kib:.1f} KiB ({quant}, h{c['hidden_size']})"
        left = max(0, int(self.deadline - time.time()))
        return line + f" | {left // 60}m{left % 60:02d}s left"

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        line = self.status(trials)
        now = time.time()
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns
            print("\r" + line[: width - 1].ljust(width - 1), end="", flush=True)
        elif line.split(" | ")[0] != self._last_line.split(" | ")[0] or now - self._last_print > self.every_s:
            print(line, flush=True)
        self._last_line, self._last_print = line, now if line != self._last_line else self._last_print

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.tty:
            print()
        print(self.status(trials), flush=True)


def search_config(settings: dict[str, Any]) -> SearchConfig:
    return SearchConfig(from_dict(settings["base"]), space_from_dict(settings["space"]))


def make_trainable(run_dir: Path, settings: dict[str, Any], trial_fn: Callable = run_trial):
    """The Tune trainable: `trial_fn` (search.trainable.run_trial; tests wrap it) with the run's settings."""
    sc = search_config(settings)
    cpus = settings["cpus_per_trial"]
    fn = tune.with_parameters(
        trial_fn,
        base=sc.base,
        budget=settings["budget_bytes"],
        run_dir=str(run_dir),
        data_dir=settings["data_dir"],
        cache_dir=settings["cache_dir"],
        threads=cpus,
    )
    return tune.with_resources(fn, {"cpu": cpus})


def make_tuner(run_dir: Path, settings: dict[str, Any], verbose: bool, trial_fn: Callable = run_trial) -> tune.Tuner:
    sc = search_config(settings)
    seed = sc.base.train.seed
    space = functools.partial(define, sc=sc, budget=settings["budget_bytes"])
    metric, mode = ["val_acc", "size_bytes"], ["max", "min"]
    if settings.get("sampler", "tpe") == "random":
        # The baseline: uniform random points of the same space, every trial trained to the end.
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
        stopper, first = None, []
    else:
        sampler = optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed, n_startup_trials=16)
        stopper = DominatedAtRung(first_rung=max(2, sc.base.train.epochs // 6))
        first = start_points(sc)
    searcher = FinishedOnlyOptunaSearch(space=space, metric=metric, mode=mode, sampler=sampler, points_to_evaluate=first)
    return tune.Tuner(
        make_trainable(run_dir, settings, trial_fn),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=settings["trials"],
            time_budget_s=settings["time_budget_s"],
        ),
        run_config=tune.RunConfig(
            name=run_dir.name,
            storage_path=str(run_dir.parent),
            callbacks=[Progress(settings["trials"], settings["time_budget_s"])],
            stop=stopper,
            verbose=2 if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )


def init_ray(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    level = logging.INFO if args.verbose else logging.ERROR
    if args.address:
        ray.init(address=args.address, log_to_driver=args.verbose, logging_level=level)
    else:
        ray.init(
            address="local",  # a private instance: never join a cluster someone else started here
            include_dashboard=args.dashboard,
            dashboard_host="127.0.0.1",
            log_to_driver=args.verbose,
            logging_level=level,
        )


def run_search(run_dir: Path, settings: dict[str, Any], args: argparse.Namespace, trial_fn: Callable = run_trial) -> int:
    import json

    from search.export import export, print_summary

    # Save the experiment state (searcher included) at least every second, so a killed
    # driver loses at most that much; trials' own records are on disk regardless.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0" if not args.verbose else "1")
    # Let Tune start the next trials while earlier ones are still starting up (actor start
    # and imports take seconds here); by default a searcher gets one pending trial at a time.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, (os.cpu_count() or 1) // settings["cpus_per_trial"])))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "search.json").write_text(json.dumps(settings, indent=1))
    init_ray(args, settings)
    print(
        f"run {settings['name']}: budget {settings['budget_kb']:g} KiB = {settings['budget_bytes']} B, "
        f"{settings['trials']} trials, time budget {settings['time_budget_s'] / 60:.0f} min, results in {run_dir}"
    )
    print(f"watch it: tensorboard --logdir {run_dir} --host 127.0.0.1", flush=True)
    try:
        if args.resume:
            tuner = tune.Tuner.restore(str(run_dir), trainable=make_trainable(run_dir, settings, trial_fn), resume_unfinished=True)
        else:
            tuner = make_tuner(run_dir, settings, args.verbose, trial_fn)
        ran = len(tuner.fit())
    except KeyboardInterrupt:  # Ray usually handles Ctrl-C itself and returns from fit()
        ran = 0
    finally:
        ray.shutdown()
    summary = export(run_dir)
    print_summary(summary, run_dir)
    if ran < settings["trials"]:
        resume = f"python -m search.run --resume --name {settings['name']} --out {run_dir.parent}"
        print(f"stopped after {ran} of {settings['trials']} trials (time budget or Ctrl-C); to continue: {resume}")
    return 0
