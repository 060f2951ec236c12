"""Ray Tune wiring of the search: Optuna searcher, early stopping, progress line, resume."""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.search_generator import SearchGenerator
from ray.tune.stopper import CombinedStopper

from fsdd.errors import Error
from search.board import write_experiment
from search.protocol import protocol_for
from search.schema import RunSettings
from search.space import define, hparam_domains, start_points
from search.trainable import run_trial, trial_name


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


class ResumableSearch(SearchGenerator):
    """Ray's SearchGenerator (which asks the searcher for new trials), except that a search ended
    by its time budget is not saved as finished. Ray marks the generator finished whenever a
    stopper ends the experiment and saves that flag, so a resumed run would never start another
    trial; here, read back, it is finished only once every one of its `--trials` was started."""

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._finished = self._counter >= self._total_samples


class DominatedAtRung(tune.Stopper):
    """Stops a trial at a rung (reports r, r*f, r*f^2, ...: epochs in the random protocol,
    folds in the speaker protocol) when at least `k` trials that are no larger already had a
    better accuracy at that rung: it is then unlikely to reach the front. The multi-objective
    analogue of ASHA's rule; Ray's ASHA takes one metric and, on accuracy alone, stops every
    small model, which are half the front. A report that says the trial has trained all it
    will (`trained`) is never a reason to stop it. `stopped` names the trials it stopped."""

    def __init__(self, first_rung: int, k: int = 2, factor: int = 3):
        self.first_rung, self.k, self.factor = first_rung, k, factor
        self.seen: dict[int, list[tuple[int, float]]] = {}
        self.stopped: set[str] = set()

    def _is_rung(self, it: int) -> bool:
        r = self.first_rung
        while r < it:
            r *= self.factor
        return r == it

    def __call__(self, trial_id: str, result: dict) -> bool:
        it = result.get("training_iteration", 0)
        if result.get("final") or result.get("trained") or not self._is_rung(it):
            return False
        size, acc = result.get("cost_bytes", result["size_bytes"]), result["val_acc"]
        better = sum(1 for s, a in self.seen.get(it, []) if s <= size and a > acc)
        self.seen.setdefault(it, []).append((size, acc))
        if better >= self.k:
            self.stopped.add(trial_id)
            return True
        return False

    def stop_all(self) -> bool:
        return False


class TimeLimit(tune.Stopper):
    """Ends the search `budget_s` seconds of wall clock after this process starts (or resumes) it.

    Written here rather than Ray's `TuneConfig(time_budget_s=...)`: Ray saves its TimeoutStopper
    with the experiment state and, on resume, continues with what was left of the budget, so a run
    stopped by its time budget resumed only to stop again at once. This stopper is never saved
    with its clock: it pickles as a reference to the process's own (`TimeLimit.armed`, set by
    `arm` before the search starts or resumes), so a resume gets this session's `--time-budget`."""

    armed: TimeLimit | None = None  # the driver process's

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.deadline = time.time() + budget_s

    def arm(self) -> TimeLimit:
        self.deadline = time.time() + self.budget_s
        TimeLimit.armed = self
        return self

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return time.time() >= self.deadline

    def __reduce__(self) -> tuple:
        return (_armed_time_limit, ())


def _armed_time_limit() -> TimeLimit:
    """What a saved TimeLimit becomes when Ray reads it back: the process's armed one (no limit if
    none is armed, e.g. a tool only reading the state)."""
    return TimeLimit.armed or TimeLimit(math.inf)


def reported(result: dict | None) -> bool:
    """Whether a trial's last result is one of its own reports (Ray fills in `training_iteration`
    only from those), not the defaults Ray gives a trial that never reported."""
    return "training_iteration" in (result or {})


def trial_counts(trials: list, stopped_early: set[str]) -> dict[str, int]:
    """What happened to the trials: trained to the end (feasible), stopped early as dominated
    (by DominatedAtRung, `stopped_early`), infeasible (over budget, never trained), failed
    (raised), interrupted (ended otherwise: Ctrl-C, time budget), unreported (ended before its
    first report, often before it started: it trained nothing that counts), running, pending."""
    counts = dict.fromkeys(("finished", "stopped_early", "infeasible", "failed", "interrupted", "unreported", "running", "pending"), 0)
    for t in trials:
        last = t.last_result or {}
        if t.status == "ERROR":
            counts["failed"] += 1
        elif last.get("final"):
            counts["infeasible" if last.get("infeasible") else "finished"] += 1
        elif t.trial_id in stopped_early:
            counts["stopped_early"] += 1
        elif t.status == "RUNNING":
            counts["running"] += 1
        elif t.status == "PENDING":
            counts["pending"] += 1
        elif reported(last):
            counts["interrupted"] += 1
        else:
            counts["unreported"] += 1
    return counts


class Progress(tune.Callback):
    """One concise status line: trials finished/early-stopped/infeasible/failed/interrupted,
    the best feasible accuracy the search ranks on with its size, and the time left."""

    def __init__(self, trials: int, limit: TimeLimit, stopper: DominatedAtRung | None = None, metric: str = "val", every_s: float = 30.0):
        self.trials, self.limit, self.every_s = trials, limit, every_s
        self.stopper, self.metric = stopper, metric
        self.tty = sys.stdout.isatty()
        self._last_line, self._last_print = "", 0.0

    def parts(self, trials: list) -> tuple[str, str, str]:
        """(counts, best, time left) of the status line."""
        c = trial_counts(trials, self.stopper.stopped if self.stopper else set())
        ended = c["finished"] + c["stopped_early"] + c["infeasible"] + c["failed"] + c["interrupted"] + c["unreported"]
        counts = (
            f"{ended}/{self.trials} ended: {c['finished']} finished, {c['stopped_early']} stopped early, "
            f"{c['infeasible']} infeasible, {c['failed']} failed"
            + (f", {c['interrupted']} interrupted" if c["interrupted"] else "")
            + (f", {c['unreported']} cut before their first report" if c["unreported"] else "")
        )
        counts += f"; {c['running']} running"
        best = ""
        feasible = [t for t in trials if (t.last_result or {}).get("final") and not t.last_result.get("infeasible")]
        if feasible:
            t = max(feasible, key=lambda t: (t.last_result["val_acc"], -t.last_result["cost_bytes"]))
            kib = t.last_result["cost_bytes"] / 1024
            best = f"best {self.metric} {t.last_result['val_acc']:.4f} at {kib:.1f} KiB ({trial_name(t.experiment_tag, t.config)})"
        left = max(0, int(self.limit.deadline - time.time())) if math.isfinite(self.limit.deadline) else 0
        return counts, best, f"{left // 60}m{left % 60:02d}s left"

    def status(self, trials: list) -> str:
        return " | ".join(p for p in self.parts(trials) if p)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        counts, best, left = self.parts(trials)
        now = time.time()
        if self.tty:
            # One line rewritten in place; time left and the best first, so a narrow terminal cuts the counts.
            width = shutil.get_terminal_size((120, 20)).columns
            line = " | ".join(p for p in (left, best, counts) if p)
            print("\r" + line[: width - 1].ljust(width - 1), end="", flush=True)
        elif counts != self._last_line or now - self._last_print > self.every_s:
            # Not a terminal (a log file): a line when the counts change, else every `every_s`.
            print(" | ".join(p for p in (counts, best, left) if p), flush=True)
            self._last_print = now
        self._last_line = counts

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.tty:
            print()
        print(self.status(trials), flush=True)


def make_trainable(run_dir: Path, settings: RunSettings, trial_fn: Callable = run_trial):
    """The Tune trainable: `trial_fn` (search.trainable.run_trial; tests wrap it) with the run's settings."""
    fn = tune.with_parameters(
        trial_fn,
        base=settings.base,
        budget=settings.budget,
        run_dir=str(run_dir),
        data=settings.corpora,
        cache_dir=settings.cache_dir,
        threads=settings.cpus_per_trial,
    )
    return tune.with_resources(fn, {"cpu": settings.cpus_per_trial})


def make_stopper(settings: RunSettings) -> DominatedAtRung | None:
    """Early stopping of dominated trials at the protocol's rungs (None for random search, which
    trains every trial to the end)."""
    if settings.sampler == "random":
        return None
    first, factor = protocol_for(settings.base).rungs(settings.base)
    return DominatedAtRung(first_rung=first, factor=factor)


def ray_callbacks(settings: RunSettings, stopper: DominatedAtRung | None, limit: TimeLimit) -> list[tune.Callback]:
    """Ray's JSON and CSV loggers (export reads result.json), no TensorBoard logger of Ray's: each
    trial writes its own TensorBoard run (search.board), named for what it is, so TensorBoard
    shows every trial once. And the progress line."""
    label = protocol_for(settings.base).label
    return [JsonLoggerCallback(), CSVLoggerCallback(), Progress(settings.trials, limit, stopper, label)]


def make_tuner(run_dir: Path, settings: RunSettings, limit: TimeLimit, verbose: bool, trial_fn: Callable = run_trial) -> tune.Tuner:
    sc = settings.search
    seed = sc.base.train.seed
    space = functools.partial(define, sc=sc, budget=settings.budget)
    metric, mode = ["val_acc", "cost_bytes"], ["max", "min"]
    stopper = make_stopper(settings)
    if settings.sampler == "random":
        # The baseline: uniform random points of the same space, every trial trained to the end.
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
        first = []
    else:
        sampler = optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed, n_startup_trials=16)
        first = start_points(sc)
    searcher = FinishedOnlyOptunaSearch(space=space, metric=metric, mode=mode, sampler=sampler, points_to_evaluate=first)
    return tune.Tuner(
        make_trainable(run_dir, settings, trial_fn),
        tune_config=tune.TuneConfig(
            search_alg=ResumableSearch(searcher),
            num_samples=settings.trials,  # the time budget is `limit`, a stopper that a resume re-arms
            # One worker process per CPU slot, kept across trials: torch, Lightning and Brevitas are
            # imported once per worker instead of once per trial (seconds each on this machine).
            reuse_actors=True,
            trial_dirname_creator=lambda trial: trial_name(trial.experiment_tag, trial.config),
        ),
        run_config=tune.RunConfig(
            name=run_dir.name,
            storage_path=str(run_dir.parent),
            callbacks=ray_callbacks(settings, stopper, limit),
            stop=CombinedStopper(stopper, limit) if stopper else limit,
            verbose=2 if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )


def short_temp_dir() -> str | None:
    """A temporary directory for Ray when the default one is too long for its sockets.

    Ray puts AF_UNIX sockets under `<temp>/session_<date>_<pid>/sockets/`, and such a path may
    not exceed 107 bytes; with a long $TMPDIR, Ray fails to start. Returns None when the default
    is short enough, else `/tmp/ray-<uid>` (created); Error if that is not possible."""
    default = os.path.join(tempfile.gettempdir(), "ray")
    if len(default) + SOCKET_SUFFIX <= 107:
        return None
    short = f"/tmp/ray-{os.getuid()}"
    try:
        os.makedirs(short, exist_ok=True)
        if not os.access(short, os.W_OK):
            raise OSError("not writable")
    except OSError:
        raise Error(
            f"the temporary directory {tempfile.gettempdir()!r} is too long for Ray's sockets "
            f"(AF_UNIX paths are limited to 107 bytes) and {short} is not usable: set TMPDIR to a shorter directory"
        ) from None
    return short


SOCKET_SUFFIX = 64  # len("/session_2026-11-29_19-47-59_123456_1234567/sockets/plasma_store") rounded up


def init_ray(args: argparse.Namespace, settings: RunSettings) -> None:
    """Start (or join) Ray; Error with one line if it cannot start or cannot run a trial."""
    level = logging.INFO if args.verbose else logging.ERROR
    try:
        if args.address:
            ray.init(address=args.address, log_to_driver=args.verbose, logging_level=level)
        else:
            temp = short_temp_dir()
            if temp:
                print(f"note: $TMPDIR is too long for Ray's sockets; Ray keeps its session files in {temp}", flush=True)
            ray.init(
                address="local",  # a private instance: never join a cluster someone else started here
                include_dashboard=args.dashboard,
                dashboard_host="127.0.0.1",
                log_to_driver=args.verbose,
                logging_level=level,
                **({"_temp_dir": temp} if temp else {}),
            )
    except Error:
        raise
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the user needs the cause in one line
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Error(f"Ray could not start ({type(e).__name__}: {cause}); nothing was run, the same command can be retried") from None
    need = settings.cpus_per_trial
    per_node = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    if not per_node or max(per_node) < need:
        ray.shutdown()
        have = max(per_node, default=0)
        raise Error(
            f"--cpus-per-trial {need} cannot be placed: the largest node of this Ray cluster has {have:g} CPUs; "
            f"use --cpus-per-trial {max(1, int(have))} or fewer"
        )


class RestoreFailed(logging.Filter):
    """Ray's own verdict on a damaged run: its tune controller, given saved state it cannot restore,
    logs "Failed to restore the run state" with a traceback and starts the search over (unless
    fail_fast, which would also end a search at its first failed trial). That record is turned
    into one line that refuses the resume, before anything is trained again."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to restore the run state"):
            e = record.exc_info[1] if record.exc_info else None
            cause = f" ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})" if e else ""
            raise Error(
                f"{self.run_dir}: Ray cannot restore its saved search state{cause}: the run cannot be resumed; "
                f"its finished trials can still be exported: python -m search.export {self.run_dir}"
            )
        return True


def run_search(run_dir: Path, settings: RunSettings, args: argparse.Namespace, trial_fn: Callable = run_trial) -> int:
    """Start Ray and run (or resume) the search in the claimed `run_dir`; the number of trials that
    ran (reported at least once, or failed). Error in one line if Ray cannot start or the search
    cannot run; a new run that never got going leaves nothing behind."""
    # Save the experiment state (searcher included) at least every second, so a killed
    # driver loses at most that much; trials' own records are on disk regardless.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0" if not args.verbose else "1")
    # Ray's default loggers include a TensorBoard one per trial, beside each trial's own run
    # (search.board): off, and the JSON/CSV loggers are added explicitly (ray_callbacks).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # Let Tune start the next trials while earlier ones are still starting up (actor start
    # and imports take seconds here); by default a searcher gets one pending trial at a time.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, (os.cpu_count() or 1) // settings.cpus_per_trial)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    protocol = protocol_for(settings.base)
    init_ray(args, settings)
    try:
        if args.resume and not tune.Tuner.can_restore(str(run_dir)):
            raise Error(
                f"run {settings.name!r} has no saved search state (it never got going): "
                f"delete {run_dir} and start it again without --resume"
            )
        if not args.resume:
            metrics = ["val_acc", "val_loss", "size_kib", "cost_kib", *protocol.metrics(settings.corpora)]
            write_experiment(run_dir, hparam_domains(settings.search), metrics)
        print(
            f"run {settings.name}: budget {settings.budget.kib:g} KiB = {settings.budget.bytes} B, {settings.trials} trials, "
            f"time budget {settings.time_budget_s / 60:.3g} min, split {protocol.name}: {protocol.title}; results in {run_dir}"
        )
        print(f"watch it: tensorboard --logdir {run_dir} --host 127.0.0.1", flush=True)
        controller = logging.getLogger("ray.tune.execution.tune_controller")
        refuse = RestoreFailed(run_dir)
        controller.addFilter(refuse)
        limit = TimeLimit(settings.time_budget_s).arm()  # before a restore reads the saved one back as this one
        try:
            if args.resume:
                tuner = tune.Tuner.restore(str(run_dir), trainable=make_trainable(run_dir, settings, trial_fn), resume_unfinished=True)
            else:
                tuner = make_tuner(run_dir, settings, limit, args.verbose, trial_fn)
            # Trials that reported or failed; not those the time budget cut before their first report.
            return sum(1 for r in tuner.fit() if r.error or reported(r.metrics))
        except KeyboardInterrupt:  # Ray usually handles Ctrl-C itself and returns from fit()
            return 0
        except Error:
            raise
        except Exception as e:  # noqa: BLE001 - Ray raises many kinds (its state damaged, a cluster gone); one line each
            cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            export = f"; its finished trials can still be exported: python -m search.export {run_dir}" if args.resume else ""
            raise Error(f"the search could not run ({type(e).__name__}: {cause}){export}") from None
        finally:
            controller.removeFilter(refuse)
    finally:
        ray.shutdown()
