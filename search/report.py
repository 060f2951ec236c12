"""The reports of a search's front: each member's row (pareto.csv, pareto.json), pareto.png, the
winner's confusion.png, and the summary printed at the end. What differs between protocols (the
ranked figure's name, their columns and marks) is asked of search.protocol."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # not pyplot: figures straight to files, no display backend
from matplotlib.ticker import LogFormatter

from fsdd.files import atomic_write, sha256_file
from fsdd.schema import dump
from search.deploy import DeployError, measure, predict_flash
from search.front import Member
from search.protocol import Protocol
from search.schema import Budget, Config
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
ON_CHIP = ("flash_bytes", "ram_bytes", "weights_bytes", "tables_bytes", "code_bytes", "static_bytes", "stack_bytes")


def on_chip(artifact: Path, cfg: Config) -> dict[str, Any]:
    """The member's C library on a Cortex-M4 (search.deploy): flash (weights, tables, code) and RAM
    (static, stack) measured from a real link when arm-none-eabi-gcc is installed; otherwise the
    calibrated prediction, and `flash_measured` false. None where it cannot deploy (e.g. an FFT
    length that is not a power of two), with the reason in `flash_note`."""
    out: dict[str, Any] = {"flash_measured": False, "flash_note": ""}
    try:
        report = measure(artifact)
        out["flash_measured"] = True
    except DeployError as e:
        out["flash_note"] = str(e)
        try:
            report = predict_flash(cfg)
        except DeployError:
            return out | dict.fromkeys(ON_CHIP)
    d = report.to_dict()
    return out | {k: d[k] for k in ON_CHIP}


def row(rank: int, member: Member, artifact: Path, run_dir: Path, protocol: Protocol) -> dict[str, Any]:
    """A member's row of pareto.csv / pareto.json: what every protocol reports, then its protocol's columns."""
    r, cfg = member.record, member.record.config
    return {
        "rank": rank,
        "trial": r.trial_name,
        "size_bytes": r.size_bytes,
        "size_kib": round(r.size_bytes / KIB, 3),
        "cost_bytes": r.cost_bytes,  # what the budget counts: size_bytes, or the predicted flash with --budget-on flash
        "quant": r.quant,
        "hidden_size": cfg.model.hidden_size,
        "n_mfcc": cfg.features.n_mfcc,
        "hop_length": cfg.features.hop_length,
        "n_fft": cfg.features.n_fft,
        "cmvn": cfg.features.cmvn,
        "sparsity": r.sparsity,
        "verify_agree": member.refit.verify_agree,
        "artifact": str(artifact.relative_to(run_dir)),
        "sha256": sha256_file(artifact),
        **on_chip(artifact, cfg),
        **protocol.columns(r, member.refit),
        "config": dump(cfg),
    }


def all_points(run_dir: Path) -> list[tuple[float, float, bool]]:
    """(KiB the budget counts, ranked accuracy, finished) of the last report of every trial Ray
    logged (faint dots). A log cut short by a killed process gives its last whole line."""
    points = []
    for f in run_dir.glob("*/result.json"):
        try:
            lines = f.read_text().strip().splitlines()
        except (OSError, ValueError):
            continue
        for line in reversed(lines):
            try:
                last = json.loads(line)
                point = (last["cost_bytes"] / KIB, float(last["val_acc"]), bool(last.get("final")))
            except (ValueError, KeyError, TypeError):
                continue
            if math.isfinite(point[0]) and math.isfinite(point[1]) and not last.get("infeasible"):
                points.append(point)
            break
    return points


def plot(path: Path, points: list[tuple[float, float, bool]], rows: Sequence[dict[str, Any]], budget: Budget, protocol: Protocol) -> None:
    """Ranked accuracy against the budgeted size (log KiB): every trial faint, the front, its
    protocol's marks per member, the budget, and (same split, weights budget) the manual study."""
    ranked = protocol.label
    fig = Figure(figsize=(10, 5), dpi=120)
    ax = fig.subplots()
    done = [(k, a) for k, a, fin in points if fin]
    early = [(k, a) for k, a, fin in points if not fin]
    if done:
        ax.scatter(*zip(*done, strict=True), s=14, color="tab:blue", alpha=0.25, label=f"trials ({ranked})")
    if early:
        ax.scatter(
            *zip(*early, strict=True), s=14, color="grey", marker="x", alpha=0.3, label=f"stopped early or interrupted ({ranked}, partial)"
        )
    kib = [r["cost_bytes"] / KIB for r in rows]
    if rows:
        front = [r["val_acc"] for r in rows]
        ax.step(kib, front, where="post", color="tab:blue", lw=1.5, marker="o", ms=4, label=f"Pareto front ({ranked})")
        for label, marker, colour, values in protocol.marks(rows):
            shown = [(k, v) for k, v in zip(kib, values, strict=True) if v is not None]
            if shown:
                ax.plot(*zip(*shown, strict=True), marker, color=colour, ms=5, label=label)
    study = protocol.compare_with_study and budget.on == "weights"
    if study:
        for i, (label, k, acc) in enumerate(STUDY_POINTS):
            ax.plot(k, acc, "s", color="black", ms=6, label="manual study (test)" if i == 0 else None)
            # Labels alternately above and below: the pruned and PTQ points nearly coincide.
            ax.annotate(label.replace("study ", ""), (k, acc), textcoords="offset points", xytext=(5, 4 if i % 2 == 0 else -10), fontsize=7)
    ax.axvline(budget.kib, color="tab:green", ls="--", label=f"budget {budget.kib:g} KiB")
    ax.set_xscale("log")
    xs = [k for k, _, _ in points] + ([k for _, k, _ in STUDY_POINTS] if study else []) + [budget.kib]
    ax.set_xlim(0.7 * min(xs), (3 if study else 1.4) * max(xs))  # the study's labels need room on the right
    # Sizes as plain numbers (30, not 3x10^1), on the minor ticks too where the axis spans little.
    plain = LogFormatter(labelOnlyBase=False)
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
    if budget.on == "flash":
        ax.set_xlabel("Cortex-M4 flash of the whole C library, KiB (predicted)")
    else:
        ax.set_xlabel("model size, KiB (artifact payload" + ("; study points in the study's convention)" if study else ")"))
    ax.set_ylabel(protocol.axis)
    lows = [a for _, a, _ in points] + [v for *_, values in protocol.marks(rows) for v in values if v is not None]
    ax.set_ylim(max(0.0, min([0.6, *lows]) - 0.02), 1.005)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)


def plot_confusions(path: Path, member: dict[str, Any]) -> None:
    """One confusion matrix per held-out speaker of a front member's folds (rows: the digit said,
    columns: the digit predicted; clip counts), titled with the speaker's accuracy."""
    folds = member["folds"]
    cols = min(3, len(folds))
    rows = (len(folds) + cols - 1) // cols
    fig = Figure(figsize=(3.3 * cols, 3.3 * rows + 0.6), dpi=120)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(folds) :]:
        ax.axis("off")
    for ax, fold in zip(axes.flat, folds, strict=False):
        m = np.array(fold["confusion"])
        ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1, int(m.sum(1).max())))
        for (i, j), v in np.ndenumerate(m):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if v > m.max() / 2 else "black")
        ax.set_title(f"{fold['speaker']}: {fold['correct'] / fold['n']:.3f}", fontsize=9)
        ax.set_xticks(range(10))
        ax.set_yticks(range(10))
        ax.tick_params(labelsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("said", fontsize=7)
    fig.suptitle(
        f"{member['quant']} h{member['hidden_size']}, {member['size_kib']:.2f} KiB: each speaker held out of training "
        f"(pooled {member['new_speaker_acc']:.3f}, mean {member['new_speaker_mean']:.3f})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """pareto.csv, written atomically: one row per member, its config as JSON in the last column."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            fields = [k for k in (rows[0] if rows else {"rank": 0}) if k not in ("config", "folds")] + ["config"]
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({**r, "config": json.dumps(r["config"], sort_keys=True)})

    atomic_write(path, write)


def _kib(n: int | None) -> str:
    return "-" if n is None else f"{n / KIB:.2f}"


def print_summary(summary: dict[str, Any], run_dir: Path, protocol: Protocol) -> None:
    """The front as a table (KiB of weights, KiB of the Cortex-M4 library, the ranked accuracy and
    the protocol's figures), then the winner and where everything is."""
    rows = summary["front"]
    n, done = len(rows), summary["trials_finished"]
    print(f"\nPareto front of {summary['name']}: {n} member{'s' * (n != 1)}, from {done} trial{'s' * (done != 1)} trained to the end:")
    print(f"  {'KiB':>8} {'flash':>7} {protocol.label:>16}")
    for r in rows:
        print(f"  {r['size_kib']:8.2f} {_kib(r.get('flash_bytes')):>7} {r['val_acc']:16.4f}  {protocol.describe(r)}")
    w = summary["winner"]
    if w is None:
        print("no trial within the size budget was trained to the end yet")
        return
    print(
        f"winner (best {protocol.label} within {summary['budget_bytes'] / KIB:g} KiB): {w['quant']} h{w['hidden_size']}, "
        f"{w['size_bytes']} B = {w['size_kib']:.2f} KiB, {protocol.label} {w['val_acc']:.4f}"
    )
    for line in protocol.winner_lines(w):
        print(line)
    print(f"  artifact: {run_dir / w['artifact']}")
    extra = [run_dir / "confusion.png"] if (run_dir / "confusion.png").is_file() and w.get("folds") else []
    print("  front: " + ", ".join(str(p) for p in [run_dir / "pareto.csv", run_dir / "pareto.json", run_dir / "pareto.png", *extra]))
