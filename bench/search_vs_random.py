"""The search against plain random search over the same space, on the same clock.

    FSDD_DIR=../shared/fsdd/recordings python bench/search_vs_random.py [--minutes 8] [--budgets 36 2]

Runs four searches one after the other, each with the same wall-clock budget: ours (TPE +
ASHA) and random search (Optuna's RandomSampler through Ray Tune, no early stopping), at
36 KiB and at 2 KiB. From each trial's final report (validation accuracy, time since the
run started) it computes the time to reach the target validation accuracy (0.99 at 36 KiB,
0.97 at 2 KiB) and the best validation accuracy at the end and at half time, then prints
one JSON object with both searches' figures and their ratio (also counted from each
search's first trial, which leaves out Ray's start-up common to both).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

from fsdd.download import resolve_data_dir
from search.run import main as run_main

CASES = [(36.0, 0.99), (2.0, 0.97)]


def curve(run_dir: Path) -> list[tuple[float, float, int, str]]:
    """(seconds since start, validation accuracy, size, model) of every finished feasible trial."""
    started = json.loads((run_dir / "search.json").read_text())["started_ts"]
    points = []
    for f in run_dir.glob("*/result.json"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if r.get("final") and not r.get("infeasible"):
                c = r.get("config", {})
                model = f"{c.get('quant')}{c.get('bits', '')} {r['size_bytes']} B"
                points.append((r["timestamp"] - started, r["val_acc"], r["size_bytes"], model))
    return sorted(points)


def first_trial_start(run_dir: Path) -> float:
    """Seconds from the run's start to the start of its first trial: Ray's start-up, worker
    processes and their imports, the same for both searches."""
    started = json.loads((run_dir / "search.json").read_text())["started_ts"]
    starts = []
    for f in run_dir.glob("*/result.json"):
        lines = f.read_text().splitlines()
        if lines:
            r = json.loads(lines[0])
            starts.append(r["timestamp"] - r["time_this_iter_s"] - started)
    return min(starts, default=float("nan"))


def figures(points: list[tuple[float, float, int, str]], target: float, seconds: float) -> dict:
    hit = next(((t, model) for t, acc, _, model in points if acc >= target), None)
    best = max((acc for _, acc, _, _ in points), default=0.0)
    best_half = max((acc for t, acc, _, _ in points if t <= seconds / 2), default=0.0)
    return {
        "finished_trials": len(points),
        "time_to_target_s": None if hit is None else round(hit[0], 1),
        "first_at_target": None if hit is None else hit[1],
        "best_val_acc": best,
        "best_val_acc_at_half_time": best_half,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of each of the four searches")
    p.add_argument("--data-dir")
    p.add_argument("--budgets", type=float, nargs="+", default=[b for b, _ in CASES], choices=[b for b, _ in CASES])
    args = p.parse_args()
    data_dir = str(resolve_data_dir(args.data_dir))
    seconds = args.minutes * 60
    out: dict = {"minutes_per_search": args.minutes}
    with tempfile.TemporaryDirectory() as tmp:
        for budget_kb, target in [c for c in CASES if c[0] in args.budgets]:
            case: dict = {"target_val_acc": target}
            for sampler in ("tpe", "random"):
                name = f"{sampler}-{budget_kb:g}"
                # The random split: its targets are validation accuracies (the speaker protocol's folds are slower and lower).
                argv = ["--budget-kb", str(budget_kb), "--sampler", sampler, "--trials", "10000", "--time-budget", f"{seconds}s",
                        "--split", "random", "--data-dir", data_dir, "--out", tmp, "--name", name,
                        "--cache-dir", str(Path(tmp) / f"cache-{name}")]  # fmt: skip
                with contextlib.redirect_stdout(io.StringIO()):
                    run_main(argv)
                case[sampler] = figures(curve(Path(tmp) / name), target, seconds)
                case[sampler]["first_trial_started_s"] = round(first_trial_start(Path(tmp) / name), 1)
                print(name, case[sampler], file=sys.stderr, flush=True)
            t_ours, t_rand = case["tpe"]["time_to_target_s"], case["random"]["time_to_target_s"]
            case["speedup_time_to_target"] = None if not t_ours else round((t_rand or seconds) / t_ours, 2)
            case["speedup_note"] = "random never reached the target: its time counted as the full budget" if t_rand is None else ""
            if t_ours and t_rand:  # the same ratio with each search's clock started at its first trial
                s_ours, s_rand = case["tpe"]["first_trial_started_s"], case["random"]["first_trial_started_s"]
                case["speedup_from_first_trial"] = round((t_rand - s_rand) / (t_ours - s_ours), 2)
            out[f"{budget_kb:g}KiB"] = case
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
