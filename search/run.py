"""The search: `python -m search.run --budget-kb 36`.

Ray Tune runs the trials (dominated ones are stopped early), Optuna's multi-objective TPE
proposes them (maximize the accuracy on held-out speakers, pooled over leave-one-speaker-out
folds, or validation accuracy on the random split; minimize the budgeted bytes), every
proposal fits the budget by construction (search.space), and the Pareto front is exported
at the end, on Ctrl-C and when the time budget runs out (search.export).
"""

from __future__ import annotations

import argparse
import json
import os
import pickletools
import re
import socket
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from fsdd.audio import list_wavs
from fsdd.download import resolve_data_dir
from fsdd.errors import DataError
from fsdd.features import load_features
from fsdd.splits import PROTOCOL_SPEAKERS, fold_kinds, make_split
from search.config import Config, ConfigError, from_dict
from search.errors import SearchError
from search.size import KIB
from search.space import BUDGET_ON, SearchConfig, load_search_config, smallest_ram, smallest_size

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
        raise SearchError(f"cannot reach a Ray cluster at {address!r} (is `ray start --head` running there?)") from None


def finite_positive_kib(text: str) -> float:
    """argparse type of --budget-kb: a number of KiB in (0, 2^40]. NaN fails the comparison, and
    inf (or 1e308, whose bytes overflow) would make a budget that no size can be checked against."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of KiB, got {text!r}") from None
    if not 0 < value <= 2**40:
        raise argparse.ArgumentTypeError(f"expected a finite number of KiB > 0 (at most 2^40 KiB = 1 PiB), got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """Command-line mistakes end in one line (like every other input error), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:

    p = OneLineParser(prog="python -m search.run", description=__doc__.splitlines()[0])
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
        default=DEFAULT_TIME_BUDGET,
        help="wall-clock limit, e.g. 30m (%(default)s)",
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
    p.add_argument("--data-dir", help="FSDD recordings (default: $FSDD_DIR, else download)")
    p.add_argument("--cache-dir", help="feature and float-parent cache (default: $FSDD_CACHE or ~/.cache/fsdd)")
    p.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs (and torch threads) per trial (%(default)s)")
    p.add_argument("--name", help="run name (default: kws-<budget>kib-<time>)")
    p.add_argument("--out", default="runs", help="where runs are stored; a shared path on a cluster (%(default)s)")
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


def check_data(base: Config, data_dir: str, cache_dir: str | None) -> None:
    """Before Ray starts, DataError with one line if the data cannot serve the search: an unusable
    clip (read once here for the base features, which also warms the feature cache for the
    trials), or a split, or speaker-protocol folds, that this data cannot make."""
    t = base.train
    if t.split in ("all",) or t.split.startswith("loso:"):
        raise SearchError(
            f"--split {t.split} is one part of the speaker protocol, not a protocol to search with: "
            f"use {PROTOCOL_SPEAKERS} (every loso fold), random, official or speaker:NAME"
        )
    load_features(data_dir, base.features, cache_dir)
    names = [f.name for f in list_wavs(data_dir)]
    if t.split == PROTOCOL_SPEAKERS:
        fold_kinds(names, t.test_speaker)
    else:
        make_split(names, t.split, t.seed, test_speaker=t.test_speaker)


def check_ray_state(run_dir: Path) -> None:
    """SearchError if Ray's saved state in `run_dir` is visibly damaged: Ray, given a damaged state,
    logs a traceback and silently starts the search over. The experiment state (JSON) must hold
    its trial list (each trial two JSON objects) and its runner data; each of Ray's pickles
    (tuner.pkl, the searcher's states) must decode as a pickle opcode stream ending at its STOP
    (pickletools reads the opcodes without executing any)."""
    states = sorted(run_dir.glob("experiment_state-*.json"))
    pickles = [run_dir / "tuner.pkl"] + sorted(run_dir.glob("searcher-state-*")) + sorted(run_dir.glob("search_gen_state-*"))
    for state in states + [p for p in pickles if p.exists()]:
        try:
            if state in states:
                data = json.loads(state.read_text())
                trials = data["trial_data"]
                whole = isinstance(data["runner_data"], dict) and all(
                    isinstance(pair, list) and len(pair) == 2 and all(isinstance(json.loads(x), dict) for x in pair) for pair in trials
                )
            else:
                raw = state.read_bytes()
                ops = list(pickletools.genops(raw))
                whole = bool(ops) and ops[-1][0].name == "STOP" and ops[-1][2] == len(raw) - 1
        except (OSError, ValueError, TypeError, KeyError, RecursionError, EOFError):
            whole = False
        if not whole:
            raise SearchError(
                f"{state}: Ray's saved search state is damaged, the run cannot be resumed; "
                f"its finished trials can still be exported: python -m search.export {run_dir}"
            )


SMALL_FLASH_KIB = 16  # below this, the default space's front-end tables are much of the flash image


def flash_hint(args: argparse.Namespace) -> str | None:
    """A note for a new run with a small flash budget on the default space, else None. Measured:
    the default front ends (n_fft 256-512) leave 2-4 KiB of an 8 KiB image for weights (0.962
    test accuracy at 7.36 KiB); configs/on-chip.yaml's reach 0.984 at 6.04 KiB (README)."""
    default = Path(args.config).resolve() == Path(str(resources.files("search") / "search.yaml")).resolve()
    if args.resume or args.budget_on != "flash" or args.budget_kb is None or args.budget_kb > SMALL_FLASH_KIB or not default:
        return None
    return f"note: for a flash budget of {args.budget_kb:g} KiB, the smaller front ends of configs/on-chip.yaml usually do better"


def is_plain_name(name: str) -> bool:
    """A run name is one folder inside --out: not empty, no path separator, not . or .., printable."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and name.isprintable()


def check_settings(settings: dict[str, Any], path: Path) -> None:
    """A saved run's settings are what this version writes (types and values), or SearchError:
    a resumed run must not fail deep inside Ray on a settings file that was edited or damaged."""
    from search.space import space_from_dict

    ints = ("budget_bytes", "trials", "cpus_per_trial")
    try:
        bad = [k for k in ints if isinstance(settings[k], bool) or not isinstance(settings[k], int) or settings[k] < 1]
        t = settings["time_budget_s"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < 2**40:
            bad.append("time_budget_s")
        budget_kb = settings["budget_kb"]
        if isinstance(budget_kb, bool) or not isinstance(budget_kb, int | float) or not 0 < budget_kb < 2**30:
            bad.append("budget_kb")
        bad += [k for k in ints if k not in bad and settings[k] > 2**40]  # beyond any float's exact range: a lie
        ram = settings.get("ram_budget_bytes")
        if ram is not None and (isinstance(ram, bool) or not isinstance(ram, int) or ram < 1):
            bad.append("ram_budget_bytes")
        cpus = settings.get("cpus", 1)
        if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
            bad.append("cpus")
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive numbers")
        texts = {"name": False, "data_dir": False, "cache_dir": True}  # key: may be null
        odd = [k for k, nullable in texts.items() if not (isinstance(settings.get(k), str) or (nullable and settings.get(k) is None))]
        if odd:
            raise ValueError(f"{', '.join(odd)} must be {'a path' if odd != ['name'] else 'a name'}")
        choices = {"budget_on": ("weights", "flash"), "sampler": ("tpe", "random")}
        for key, allowed in choices.items():
            if key in settings and settings[key] not in allowed:
                raise ValueError(f"{key} is {str(settings[key])[:40]!r}, not one of {', '.join(allowed)}")
        SearchConfig(from_dict(settings["base"]), space_from_dict(settings["space"]))
    except (ConfigError, ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError) as e:
        raise SearchError(f"{path}: {str(e).splitlines()[0][:200]}: the run cannot be resumed; start a new one") from None


def prepare(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Validate everything that can be checked before Ray starts; the run dir and its settings."""
    if args.cpus_per_trial < 1 or args.trials < 1:
        raise SearchError("--cpus-per-trial and --trials must be >= 1")
    out = Path(args.out).resolve()
    if args.name is not None and not is_plain_name(args.name):
        raise SearchError(f"--name {args.name!r} must be a plain folder name (no '/', not '.' or '..'): the run lives in --out")
    if args.resume:
        if not args.name:
            raise SearchError("--resume needs --name NAME of the run to continue")
        run_dir = out / args.name
        if not (run_dir / "search.json").is_file():
            raise SearchError(f"no run named {args.name!r} in {out} to resume")
        try:
            settings = json.loads((run_dir / "search.json").read_text())
            missing = {"name", "budget_bytes", "base", "space", "trials", "time_budget_s", "cpus_per_trial", "data_dir"} - set(settings)
        except (ValueError, TypeError, OSError, RecursionError):
            raise SearchError(f"{run_dir / 'search.json'} cannot be read: the run cannot be resumed; start a new one") from None
        if missing:
            raise SearchError(f"{run_dir / 'search.json'} lacks {', '.join(sorted(missing))}: the run cannot be resumed; start a new one")
        check_settings(settings, run_dir / "search.json")
        if not (run_dir / "trials").is_dir():
            raise SearchError(f"{run_dir / 'trials'} is missing or not a folder: the run's trials are gone; start a new run")
        check_ray_state(run_dir)
        return run_dir, settings
    if args.budget_kb is None:
        raise SearchError("--budget-kb is required, e.g. --budget-kb 36")
    sc = load_search_config(args.config)
    pairs = (("split", args.split), ("seed", args.seed), ("test_speaker", args.test_speaker))
    overrides = {k: v for k, v in pairs if v is not None}
    base = sc.base.replace(train=overrides) if overrides else sc.base
    sc = SearchConfig(base, sc.space)
    budget = int(args.budget_kb * KIB)
    smallest = smallest_size(sc, args.budget_on)
    if args.ram_kb is not None:
        ram = smallest_ram(sc)
        if ram > args.ram_kb * KIB:
            raise SearchError(
                f"--ram-kb {args.ram_kb:g} ({int(args.ram_kb * KIB)} B) is below the RAM of the smallest model's C library "
                f"in the space ({ram} B, predicted); raise --ram-kb or use smaller front ends (n_fft) in {args.config}"
            )
    if budget < smallest:
        raise SearchError(
            f"budget {args.budget_kb:g} KiB ({budget} B) is below the smallest model in the space "
            f"({smallest} B = {smallest / KIB:.2f} KiB); raise --budget-kb or widen the space in {args.config}"
        )
    name = args.name or f"kws-{args.budget_kb:g}kib-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = out / name
    if run_dir.exists():
        raise SearchError(f"a run named {name!r} already exists in {out}: add --resume to continue it, or pick another --name")
    data_dir = str(resolve_data_dir(args.data_dir).resolve())
    check_data(base, data_dir, args.cache_dir)
    settings = {
        "name": name,
        "budget_bytes": budget,
        "budget_kb": args.budget_kb,
        "budget_on": args.budget_on,
        "ram_budget_bytes": int(args.ram_kb * KIB) if args.ram_kb else None,
        "trials": args.trials,
        "time_budget_s": args.time_budget,
        "cpus_per_trial": args.cpus_per_trial,
        "sampler": args.sampler,
        "data_dir": data_dir,
        "cache_dir": str(Path(args.cache_dir).resolve()) if args.cache_dir else None,
        "config_file": str(args.config),
        "base": base.to_dict(),
        "space": {k: list(v) if isinstance(v, tuple) else v for k, v in sc.space.__dict__.items()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "started_ts": time.time(),
    }
    return run_dir, settings


def main(argv: Sequence[str] | None = None, trial_fn: Any = None) -> int:
    """CLI entry point. `trial_fn` replaces the trial function (tests inject failures with it)."""
    from search.deploy import DeployError

    args = parse_args(argv)
    try:
        run_dir, settings = prepare(args)
        if args.address:
            check_address(args.address)
    except (SearchError, ConfigError, DataError, DeployError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be made or read: a file where a folder must be, a name too long
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    hint = flash_hint(args)
    if hint:
        print(hint)
    if not args.address:
        # Local run: keep Ray on 127.0.0.1 (by default it binds the external interface). Read at import.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from search.tuner import run_search  # imports Ray: only once the input is known to be good

    try:
        return run_search(run_dir, settings, args, **({"trial_fn": trial_fn} if trial_fn else {}))
    except (SearchError, ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
