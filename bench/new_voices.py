"""The six-speaker table (each speaker held out of training in turn) of chosen configurations.

For the study's baseline config, and for the winner of each search run given (e.g. the default
search within 36 KiB and within 4 KiB), retrains the configuration on every leave-one-speaker-out
fold with each `--seeds` seed and prints the per-speaker accuracy, their mean and the worst,
as Markdown and, last, as one JSON line. Seeds other than the search's own give a figure that
the search's selection did not see (the search ranked the winner on its seed-0 folds).

Usage: FSDD_DIR=... python bench/new_voices.py [--run runs/NAME ...] [--config C ...] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from fsdd.download import resolve_data_dir
from search.fit import quant_label, quiet
from search.protocol import SpeakerFolds
from search.schema import Config, from_dict, load_config
from search.size import size_bytes


def winner_config(run_dir: Path) -> Config:
    summary = json.loads((run_dir / "pareto.json").read_text())
    if not summary.get("winner"):
        raise SystemExit(f"{run_dir}: no winner in pareto.json")
    return from_dict(summary["winner"]["config"])


def table(name: str, cfg: Config, seeds: list[int], data_dir: Path, cache_dir: str | None) -> dict:
    per_seed = []
    for seed in seeds:
        fold_cfg = cfg.replace(train={"seed": seed, "split": "speakers", "test_speaker": None})
        t = SpeakerFolds().run_folds(fold_cfg, data_dir, cache_dir)
        per_seed.append(t)
        print(t.format(f"\n{name}: {quant_label(cfg)} h{cfg.model.hidden_size}, {size_bytes(cfg)} B, seed {seed}"), flush=True)
    speakers = [f.speaker for f in per_seed[0].folds]
    acc = {s: statistics.mean(t.folds[i].acc for t in per_seed) for i, s in enumerate(speakers)}
    return {
        "name": name,
        "quant": quant_label(cfg),
        "hidden_size": cfg.model.hidden_size,
        "size_bytes": size_bytes(cfg),
        "seeds": seeds,
        "acc": acc,
        "mean": statistics.mean(acc.values()),
        "worst": min(acc.values()),
        "mean_per_seed": [t.mean_acc for t in per_seed],
        "worst_per_seed": [t.worst.acc for t in per_seed],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], help="a search run folder: its winner's config")
    p.add_argument("--config", action="append", default=[], help="a config file (default: configs/baseline.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--data-dir")
    p.add_argument("--cache-dir")
    args = p.parse_args()
    quiet()
    data_dir = resolve_data_dir(args.data_dir)
    configs = [(c, load_config(c)) for c in (args.config or ([] if args.run else ["configs/baseline.yaml"]))]
    configs += [(f"winner of {r}", winner_config(Path(r))) for r in args.run]
    rows = [table(name, cfg, args.seeds, data_dir, args.cache_dir) for name, cfg in configs]
    print("\n| configuration | size B | " + " | ".join(rows[0]["acc"]) + " | mean | worst |")
    print("|---|---|" + "---|" * (len(rows[0]["acc"]) + 2))
    for r in rows:
        cells = " | ".join(f"{a:.3f}" for a in r["acc"].values())
        print(f"| {r['name']} ({r['quant']} h{r['hidden_size']}) | {r['size_bytes']} | {cells} | **{r['mean']:.3f}** | {r['worst']:.3f} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
