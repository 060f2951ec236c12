"""The result of a search: `python -m search.export RUN_DIR` (run by search.run at its end).

Collects every finished trial, keeps the feasible non-dominated ones (validation accuracy
against size), measures their test accuracy once, copies their artifacts, checks each with
the numpy reference (search.verify), and writes pareto.csv, pareto.json and pareto.png.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsdd.errors import DataError
from search.config import from_dict
from search.selection import pareto_front, record_key
from search.size import KIB

# The manual study's table (../shared/manual-study.md): label, KiB in its own convention
# (parameters x bytes per value), test accuracy. PTQ and QAT sizes are computed by
# search.size.size_bytes_study for h=80 int8 and h=97 8-bit; the others are its own figures.
STUDY_POINTS = [
    ("study baseline h128", 291.0, 0.97),
    ("study small h32", 25.2, 0.89),
    ("study pruned h72", 31.2, 0.94),
    ("study PTQ int8 h80", 30.5, 0.93),
    ("study QAT po2 h97", 43.4, 0.66),
]


def finished_records(run_dir: Path) -> list[dict[str, Any]]:
    """Records of trials that trained to the end (each wrote trials/ID/record.json)."""
    out = []
    for f in sorted((run_dir / "trials").glob("*/record.json")):
        r = json.loads(f.read_text())
        r["trial_dir"] = str(f.parent)
        out.append(r)
    return out


def all_points(run_dir: Path) -> list[tuple[float, float, bool]]:
    """(KiB, val_acc, finished) of the last report of every trial Ray recorded (faint dots)."""
    points = []
    for f in run_dir.glob("*/result.json"):
        lines = f.read_text().strip().splitlines()
        if lines:
            last = json.loads(lines[-1])
            if not last.get("infeasible") and "size_bytes" in last:
                points.append((last["size_bytes"] / KIB, last["val_acc"], bool(last.get("final"))))
    return points


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(run_dir: str | Path, data_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Build the run's exported front; returns its summary (also in pareto.json)."""
    from search.train import load_net, make_datamodule, quiet, test
    from search.verify import verify

    quiet()
    run_dir = Path(run_dir)
    settings_file = run_dir / "search.json"
    if not settings_file.is_file():
        raise DataError(f"{run_dir} is not a search run (no search.json)")
    settings = json.loads(settings_file.read_text())
    budget = settings["budget_bytes"]
    data_dir = data_dir or settings["data_dir"]
    cache_dir = cache_dir or settings["cache_dir"]
    records = finished_records(run_dir)
    front = pareto_front([r for r in records if r["size_bytes"] <= budget and r.get("artifact")])
    art_dir = run_dir / "artifacts"
    shutil.rmtree(art_dir, ignore_errors=True)
    art_dir.mkdir(parents=True)
    datamodules: dict[str, Any] = {}
    rows = []
    for rank, r in enumerate(front):
        trial = Path(r["trial_dir"])
        cfg = from_dict(json.loads((trial / "config.json").read_text()))
        key = json.dumps([cfg.features.to_dict(), cfg.train.split, cfg.train.seed])
        if key not in datamodules:
            datamodules[key] = make_datamodule(cfg, data_dir, cache_dir)
        test_acc = test(cfg, load_net(cfg, trial / "weights.safetensors"), datamodules[key], trial)
        stem = f"{rank:02d}-{r['quant']}-h{r['hidden_size']}-{r['size_bytes']}B"
        artifact = art_dir / f"{stem}.safetensors"
        shutil.copyfile(trial / "model.safetensors", artifact)
        shutil.copyfile(trial / "predictions.json", art_dir / f"{stem}.predictions.json")
        check = verify(artifact, data_dir)
        rows.append(
            {
                "rank": rank,
                "trial_id": r["trial_id"],
                "val_acc": r["val_acc"],
                "val_loss": r.get("val_loss"),
                "test_acc": test_acc,
                "verify_test_acc": check["test_acc"],
                "verify_agree": check["agree"],
                "size_bytes": r["size_bytes"],
                "size_kib": round(r["size_bytes"] / KIB, 3),
                "size_bytes_study": r["size_bytes_study"],
                "sparsity": r["sparsity"],
                "quant": r["quant"],
                "hidden_size": r["hidden_size"],
                "n_mfcc": r["n_mfcc"],
                "hop_length": cfg.features.hop_length,
                "seed": r["seed"],
                "split": r["split"],
                "split_hash": r["split_hash"],
                "artifact": str(artifact.relative_to(run_dir)),
                "sha256": _sha256(artifact),
                "config": cfg.to_dict(),
            }
        )
    # The winner is chosen on validation (test accuracy only reports it): the top of the front.
    winner = max(rows, key=lambda x: (*record_key(x), -x["size_bytes"])) if rows else None
    summary = {
        "name": settings["name"],
        "budget_bytes": budget,
        "trials_finished": len(records),
        "front": rows,
        "winner": winner,
    }
    (run_dir / "pareto.json").write_text(json.dumps(summary, indent=1))
    with open(run_dir / "pareto.csv", "w", newline="") as f:
        fields = [k for k in (rows[0] if rows else {"rank": 0}) if k != "config"] + ["config"]
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in rows:
            w.writerow({**row, "config": json.dumps(row["config"], sort_keys=True)})
    plot(run_dir / "pareto.png", all_points(run_dir), rows, budget)
    return summary


def plot(path: Path, points: list[tuple[float, float, bool]], front: list[dict[str, Any]], budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    done = [(k, a) for k, a, fin in points if fin]
    early = [(k, a) for k, a, fin in points if not fin]
    if done:
        ax.scatter(*zip(*done, strict=True), s=14, color="tab:blue", alpha=0.25, label="trials (validation)")
    if early:
        ax.scatter(*zip(*early, strict=True), s=14, color="grey", marker="x", alpha=0.3, label="stopped early (validation)")
    if front:
        kib = [r["size_kib"] for r in front]
        ax.step(
            kib,
            [r["val_acc"] for r in front],
            where="post",
            color="tab:blue",
            lw=1.5,
            label="Pareto front (validation)",
        )
        ax.plot(kib, [r["test_acc"] for r in front], "o", color="tab:red", ms=6, label="front, test accuracy")
    for i, (label, kib, acc) in enumerate(STUDY_POINTS):
        ax.plot(kib, acc, "s", color="black", ms=6, label="manual study (test)" if i == 0 else None)
        # Labels alternately above and below: the pruned and PTQ points nearly coincide.
        dy = 4 if i % 2 == 0 else -10
        ax.annotate(label.replace("study ", ""), (kib, acc), textcoords="offset points", xytext=(5, dy), fontsize=7)
    ax.axvline(budget / KIB, color="tab:green", ls="--", label=f"budget {budget / KIB:g} KiB")
    ax.set_xscale("log")
    ax.set_xlim(right=3 * max([kib for _, kib, _ in STUDY_POINTS] + [k for k, _, _ in points]))  # room for the labels
    ax.set_xlabel("model size, KiB (artifact payload; study points in the study's convention)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(max(0.0, min([0.6] + [a for _, a, _ in points])), 1.005)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    rows = summary["front"]
    print(f"\nPareto front of {summary['name']} ({len(rows)} of {summary['trials_finished']} finished trials):")
    print(f"  {'KiB':>8} {'val':>7} {'test':>7} {'verify':>7}  model")
    for r in rows:
        print(
            f"  {r['size_kib']:8.2f} {r['val_acc']:7.4f} {r['test_acc']:7.4f} {r['verify_test_acc']:7.4f}  "
            f"{r['quant']} h{r['hidden_size']} mfcc{r['n_mfcc']} sparsity {r['sparsity']:.0%}"
        )
    w = summary["winner"]
    if w is None:
        print("no trial finished within the budget yet")
        return
    print(
        f"winner (best on validation within {summary['budget_bytes'] / KIB:g} KiB): {w['quant']} h{w['hidden_size']}, "
        f"{w['size_bytes']} B = {w['size_kib']:.2f} KiB, val {w['val_acc']:.4f}, test {w['test_acc']:.4f}"
    )
    print(f"  artifact: {run_dir / w['artifact']}")
    print(f"  front: {run_dir / 'pareto.csv'}, {run_dir / 'pareto.json'}, {run_dir / 'pareto.png'}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.export", description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--data-dir", help="FSDD recordings (default: the run's)")
    p.add_argument("--cache-dir")
    args = p.parse_args(argv)
    try:
        summary = export(args.run_dir, args.data_dir, args.cache_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary(summary, Path(args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
