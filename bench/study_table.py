"""Reproduce the manual study's table: every configs/study/*.yaml over 3 seeds.

    FSDD_DIR=../shared/fsdd/recordings python bench/study_table.py [--seeds 0 1 2] [--out study_table.md]

Prints a markdown table (mean and spread of test accuracy, honest size, the study's size
convention, wall time per run), then one JSON line with every run's record.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from fsdd.download import resolve_data_dir
from search.fit import quiet
from search.protocol import run_one
from search.schema import load_config

STUDY = {  # the manual study's reported figures (test accuracy %, hidden size)
    "baseline": ("Baseline", 97, 128),
    "small": ("Small", 89, 32),
    "pruned": ("Pruned", 94, 72),
    "ptq": ("PTQ", 93, 80),
    "qat_po2_scratch": ("QAT Po2 (scratch)", 66, 97),
    "qat_po2_warm": ("QAT Po2 (warm start)", 66, 97),
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--configs", nargs="+", default=list(STUDY))
    p.add_argument("--data-dir")
    p.add_argument("--out", help="also write the markdown table here")
    args = p.parse_args()
    quiet()
    data_dir = resolve_data_dir(args.data_dir)
    records, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            cfg = load_config(Path("configs/study") / f"{name}.yaml")
            runs = []
            for seed in args.seeds:
                r, _ = run_one(cfg.replace(train={"seed": seed}), data_dir, Path(tmp) / f"{name}-{seed}")
                r["config"] = name
                runs.append(r)
                records.append(r)
                print(
                    f"{name} seed {seed}: test {r['test_acc']:.4f} size {r['size_bytes']} B {r['wall_s']} s",
                    file=sys.stderr,
                )
            accs = [r["test_acc"] * 100 for r in runs]
            label, study_acc, h = STUDY[name]
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            rows.append(
                f"| {label} | {h} | {study_acc} | {statistics.mean(accs):.1f} ± {spread:.1f} | "
                f"{runs[0]['size_bytes'] / 1024:.1f} | {runs[0]['size_bytes_study'] / 1024:.1f} | "
                f"{runs[0]['sparsity']:.1%} | {statistics.mean(r['wall_s'] for r in runs):.0f} |"
            )
    table = "\n".join(
        [
            f"| column | LSTM units | study test % | ours test % (mean ± sd, seeds {','.join(map(str, args.seeds))}) "
            "| size KiB (artifact) | size KiB (study convention) | sparsity | wall s / run |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
