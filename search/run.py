"""The search: `python -m search.run --budget-kb 36`.

Ray Tune runs the trials (dominated ones are stopped early), Optuna's multi-objective TPE
proposes them (maximize the accuracy on held-out speakers, pooled over leave-one-speaker-out
folds, or validation accuracy on the random split; minimize the budgeted bytes), every
proposal fits the budget by construction (search.space), and the Pareto front is exported
at the end, on Ctrl-C and when the time budget runs out (search.export).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from fsdd.corpora import as_corpora, parse_data_dir
from fsdd.download import resolve_data_dir
from fsdd.errors import ArgumentParser, Error, path_arg, run_cli
from fsdd.files import resolved
from fsdd.schema import SPEAKERS, Corpus, SplitName
from search import report, runfolder
from search.export import export
from search.fit import make_datamodule, with_voices
from search.protocol import protocol_for
from search.schema import BUDGET_MAX, BUDGET_ON, Budget, Config, RunSettings, SearchConfig, is_plain_name, load_search_config
from search.size import KIB
from search.space import check_against_base, smallest_ram, smallest_size
from search.tuner import run_search

DEFAULT_TRIALS = 150
DEFAULT_TIME_BUDGET = "35m"  # + the refit and export of the front: within 45 min here


def parse_duration(text: str) -> float:
    """'90s', '30m', '2h', '1h30m' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 90s, 30m, 2h, 1h30m)")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    seconds = h * 3600 + mi * 60 + s
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"the time budget must be more than 0 s, got {text!r}")
    return seconds


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast, with one line, when a Ray cluster address does not answer."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError):
        raise Error(f"cannot reach a Ray cluster at {address!r} (is `ray start --head` running there?)") from None


def finite_positive_kib(text: str) -> float:
    """argparse type of --budget-kb: a number of KiB in (0, 2^40]. NaN fails the comparison, and
    inf (or 1e308, whose bytes overflow) would make a budget that no size can be checked against."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of KiB, got {text!r}") from None
    if not 0 < value <= BUDGET_MAX / KIB:
        raise argparse.ArgumentTypeError(f"expected a finite number of KiB > 0 (at most 2^40 KiB = 1 PiB), got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:

    p = ArgumentParser(prog="python -m search.run", description=__doc__.splitlines()[0])
    p.add_argument("--budget-kb", type=finite_positive_kib, help="model size budget in KiB (1024 bytes); required for a new run")
    p.add_argument(
        "--budget-on",
        choices=BUDGET_ON,
        default="weights",
        help="weights: the artifact's payload (default); flash: the whole C library on a Cortex-M4 (weights, tables, code)",
    )
    p.add_argument(
        "--ram-kb",
        type=finite_positive_kib,
        help="also bound the C library's RAM on a Cortex-M4 (static + stack, predicted by search.deploy), in KiB",
    )
    # The default space ships inside the package (configs/search.yaml links to it), so the
    # command works from any directory and from a wheel.
    p.add_argument(
        "--config",
        default=str(resources.files("search") / "search.yaml"),
        help="search space and training settings (default: search.yaml inside the package; configs/search.yaml links to it)",
    )
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="number of trials (%(default)s)")
    p.add_argument(
        "--time-budget",
        type=parse_duration,
        default=None,
        help=f"wall-clock limit of the search, e.g. 30m ({DEFAULT_TIME_BUDGET}; with --resume, the run's own unless given)",
    )
    p.add_argument(
        "--split",
        help="speakers: rank on accuracy over leave-one-speaker-out folds (the default config's protocol); "
        "random: the manual study's split (validation shares speakers with training); official | speaker:NAME",
    )
    p.add_argument(
        "--test-speaker",
        metavar="NAME",
        help="keep this speaker out of the whole search (folds, ranking, refit); the front is tested on it once, at the end",
    )
    p.add_argument("--seed", type=int, help="split and training seed (default: the config's)")
    p.add_argument(
        "--data-dir",
        action="append",
        type=parse_data_dir,
        metavar="[NAME=]PATH",
        help="a recordings folder (default: $FSDD_DIR, else download FSDD); give it once per corpus to train and hold out "
        "speakers across several",
    )
    p.add_argument("--cache-dir", type=path_arg, help="feature and float-parent cache (default: $FSDD_CACHE or ~/.cache/fsdd)")
    p.add_argument(
        "--no-synthetic-voices",
        action="store_true",
        help="train without the config's synthetic voices (voices.synth: espeak-ng, flite, festival, piper; training only)",
    )
    p.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs (and torch threads) per trial (%(default)s)")
    p.add_argument("--name", help="run name (default: kws-<budget>kib-<time>)")
    p.add_argument("--out", type=path_arg, default="runs", help="where runs are stored; a shared path on a cluster (%(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run --name")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="existing Ray cluster (default: $RAY_ADDRESS)")
    p.add_argument(
        "--sampler",
        choices=("tpe", "random"),
        default="tpe",
        help="tpe: multi-objective TPE, dominated trials stopped early (default); random: random search over the same space",
    )
    p.add_argument("--dashboard", action="store_true", help="start Ray's dashboard on 127.0.0.1 (local runs)")
    p.add_argument("-v", "--verbose", action="store_true", help="Ray's own progress table and trial logs")
    return p.parse_args(argv)


def check_data(base: Config, corpora: tuple[Corpus, ...], cache_dir: str | None) -> None:
    """Before Ray starts, DataError with one line if the data cannot serve the search: an unusable
    clip (read once here for the base features, which also warms the feature cache for the
    trials), or a split, or folds, that this data cannot make."""
    name = SplitName.parse(base.train.split)
    if name.kind in ("all", "eval") or name.holds_out:
        raise Error(
            f"--split {base.train.split} is one part of the speaker protocol, not a protocol to search with: "
            f"use {SPEAKERS} (every fold), random, official or speaker:NAME"
        )
    protocol_for(base).check(base, corpora)
    # The base front end's features of every clip and variant, and the synthetic voices, made once
    # here (minutes the first time, cached): not by the first trials at once.
    print("preparing the data: features, variants and synthetic voices (minutes the first time, then cached)", flush=True)
    make_datamodule(base.replace(train={"split": "all", "test_speaker": None}), corpora, cache_dir)


SMALL_FLASH_KIB = 16  # below this, the default space's front-end tables are much of the flash image


def flash_hint(args: argparse.Namespace) -> str | None:
    """A note for a new run with a small flash budget on the default space, else None. Measured:
    the default front ends (n_fft 256-512) leave 2-4 KiB of an 8 KiB image for weights (0.962
    test accuracy at 7.36 KiB); configs/on-chip.yaml's reach 0.984 at 6.04 KiB (README)."""
    default = resolved(args.config, "--config") == Path(str(resources.files("search") / "search.yaml")).resolve()
    if args.resume or args.budget_on != "flash" or args.budget_kb is None or args.budget_kb > SMALL_FLASH_KIB or not default:
        return None
    return f"note: for a flash budget of {args.budget_kb:g} KiB, the smaller front ends of configs/on-chip.yaml usually do better"


def corpora_of(args: argparse.Namespace) -> tuple[Corpus, ...]:
    """The corpora of a new run: each --data-dir ([NAME=]PATH), else $FSDD_DIR or FSDD downloaded; paths resolved."""
    given = args.data_dir or list(as_corpora(resolve_data_dir(None)))
    return tuple(c.replace(path=str(resolved(c.path, "--data-dir"))) for c in given)


def new_settings(args: argparse.Namespace, name: str) -> RunSettings:
    """A new run's settings from the command line, everything checked before any work: the config,
    the budget against the smallest model the space can express, the data. Error in one line."""
    if args.budget_kb is None:
        raise Error("--budget-kb is required, e.g. --budget-kb 36")
    if args.cpus_per_trial < 1 or args.trials < 1:
        raise Error("--cpus-per-trial and --trials must be >= 1")
    sc = load_search_config(args.config)
    pairs = (("split", args.split), ("seed", args.seed), ("test_speaker", args.test_speaker))
    overrides = {k: v for k, v in pairs if v is not None}
    base, note = with_voices(sc.base.replace(train=overrides) if overrides else sc.base, args.no_synthetic_voices)
    if note:
        print(f"note: {note}", flush=True)
    sc = SearchConfig(base, sc.space)
    check_against_base(sc)
    budget = Budget(int(args.budget_kb * KIB), args.budget_on, int(args.ram_kb * KIB) if args.ram_kb else None)
    if budget.ram_bytes is not None:
        ram = smallest_ram(sc)
        if ram > budget.ram_bytes:
            raise Error(
                f"--ram-kb {args.ram_kb:g} ({budget.ram_bytes} B) is below the RAM of the smallest model's C library "
                f"in the space ({ram} B, predicted); raise --ram-kb or use smaller front ends (n_fft) in {args.config}"
            )
    smallest = smallest_size(sc, args.budget_on)
    if budget.bytes < smallest:
        raise Error(
            f"budget {args.budget_kb:g} KiB ({budget.bytes} B) is below the smallest model in the space "
            f"({smallest} B = {smallest / KIB:.2f} KiB); raise --budget-kb or widen the space in {args.config}"
        )
    corpora = corpora_of(args)
    check_data(sc.base, corpora, args.cache_dir)
    return RunSettings(
        name=name,
        budget=budget,
        base=sc.base,
        space=sc.space,
        trials=args.trials,
        time_budget_s=args.time_budget if args.time_budget is not None else parse_duration(DEFAULT_TIME_BUDGET),
        cpus_per_trial=args.cpus_per_trial,
        sampler=args.sampler,
        corpora=corpora,
        cache_dir=str(resolved(args.cache_dir, "--cache-dir")) if args.cache_dir else None,
        started=time.strftime("%Y-%m-%d %H:%M:%S"),
    )


def prepare(args: argparse.Namespace) -> tuple[Path, RunSettings]:
    """Check everything that can be checked before Ray starts, then claim the run folder (a new run)
    or hold it (--resume): the folder and its settings. Error in one line otherwise."""
    out = resolved(args.out, "--out")
    if args.name is not None and not is_plain_name(args.name):
        raise Error(f"--name {args.name!r} must be a plain folder name (no '/', not '.' or '..'): the run lives in --out")
    if args.resume:
        if not args.name:
            raise Error("--resume needs --name NAME of the run to continue")
        run_dir = out / args.name
        if not (run_dir / runfolder.SETTINGS).is_file():
            raise Error(f"no run named {args.name!r} in {out} to resume")
        settings = runfolder.settings(run_dir)
        if args.time_budget is not None:  # this session's time; the run's settings on disk stay as they were
            settings = settings.replace(time_budget_s=args.time_budget)
        runfolder.trials(run_dir)
        runfolder.hold(run_dir)
        return run_dir, settings
    name = args.name or f"kws-{args.budget_kb:g}kib-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / name).exists():  # said before the data is read; claim() decides under a race
        raise Error(f"a run named {name!r} already exists in {out}: add --resume to continue it, or pick another --name")
    settings = new_settings(args, name)
    run_dir = out / name
    runfolder.claim(run_dir)
    runfolder.write_settings(run_dir, settings)
    return run_dir, settings


def main(argv: Sequence[str] | None = None, trial_fn: object = None) -> int:
    """CLI entry point. `trial_fn` replaces the trial function (tests inject failures with it)."""
    return run_cli(lambda a: _main(a, trial_fn), argv)


def _main(argv: Sequence[str] | None, trial_fn: object) -> int:
    args = parse_args(argv)
    if args.address:
        check_address(args.address)
    else:
        # Local run: keep Ray on 127.0.0.1 (by default it binds the external interface). Read when Ray starts.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    run_dir, settings = prepare(args)
    hint = flash_hint(args)
    if hint:
        print(hint)
    try:
        ran = run_search(run_dir, settings, args, **({"trial_fn": trial_fn} if trial_fn else {}))
    except BaseException:
        if not args.resume and not any((run_dir / "trials").iterdir()):
            runfolder.release(run_dir, remove=True)  # nothing ran: leave nothing behind that blocks a retry
        raise
    summary = export(run_dir)
    report.print_summary(summary, run_dir, protocol_for(settings.base))
    if ran < settings.trials:
        resume = f"python -m search.run --resume --name {settings.name} --out {run_dir.parent}"
        print(
            f"stopped with {ran} of {settings.trials} trials run (time budget or Ctrl-C); to go on with the search "
            f"(trials cut by the time budget are not rerun; those cut by Ctrl-C are): {resume} [--time-budget 30m]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
