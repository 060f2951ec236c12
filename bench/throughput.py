"""How busy a search keeps its trial slots: sum of trial time / (slots x wall), per protocol.

Runs `python -m search.run --budget-kb 36 --time-budget 4m` (speaker protocol, the default,
and `--split random`) one after the other, then reads Ray's result.json of every trial:
a trial's own time is its last report's `time_total_s` (measured inside the trial), its span
ends at that report's `timestamp`. Prints JSON per protocol:

- busy_span: sum of trial time / (slots x (last trial end - first trial start));
- busy_wall: the same over the whole search phase, Ray's start-up included
  (from the run's start to the last trial end);
- trials, trial_s_mean, gap_s_per_trial: the time per trial that no trial used.

Usage: FSDD_DIR=... python bench/throughput.py [--minutes 4] [--protocols speakers random]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(run_dir: Path, slots: int) -> dict:
    settings = json.loads((run_dir / "search.json").read_text())
    spans = []
    for f in run_dir.glob("*/result.json"):
        lines = f.read_text().strip().splitlines()
        if lines:
            last = json.loads(lines[-1])
            spans.append((last["timestamp"] - last["time_total_s"], last["timestamp"], last["time_total_s"]))
    if not spans:
        return {"trials": 0}
    first, end = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
    busy = sum(t for _, _, t in spans)
    n = len(spans)
    return {
        "trials": n,
        "slots": slots,
        "trial_s_sum": round(busy, 1),
        "span_s": round(end - first, 1),
        "wall_s": round(end - settings["started_ts"], 1),
        "busy_span": round(busy / (slots * (end - first)), 3),
        "busy_wall": round(busy / (slots * (end - settings["started_ts"])), 3),
        "trial_s_mean": round(busy / n, 1),
        "gap_s_per_trial": round((slots * (end - first) - busy) / n, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--protocols", nargs="+", default=["speakers", "random"])
    p.add_argument("--budget-kb", type=float, default=36.0)
    args = p.parse_args()
    slots = os.cpu_count() or 1
    out = Path(tempfile.mkdtemp(prefix="throughput-"))
    for protocol in args.protocols:
        name = f"{protocol}-{time.strftime('%H%M%S')}"
        cmd = [sys.executable, "-m", "search.run", "--budget-kb", str(args.budget_kb), "--time-budget", f"{args.minutes}m"]
        cmd += ["--trials", "1000", "--split", protocol, "--out", str(out), "--name", name]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(json.dumps({"protocol": protocol, "minutes": args.minutes, **measure(out / name, slots)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
