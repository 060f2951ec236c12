"""The result of a search: `python -m search.export RUN_DIR` (run by search.run at its end).

Collects every finished trial and keeps the feasible non-dominated ones (ranked accuracy
against the budgeted bytes). Speaker protocol: retrains each on every speaker (or every
speaker but the test speaker, whom it then tests once), in parallel. Random split: measures
their test accuracy once. Then copies their artifacts, checks each with the numpy reference
(search.verify), measures its Cortex-M4 library (search.deploy), and writes pareto.csv,
pareto.json, pareto.png and, for the speaker protocol, the winner's confusion.png.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError

from fsdd.errors import DataError
from fsdd.files import atomic_write, sha256_file, write_json
from fsdd.splits import PROTOCOL_SPEAKERS
from search.artifact import ArtifactError
from search.config import Config, ConfigError, from_dict
from search.errors import SearchError
from search.selection import cost, pareto_front, record_key
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
    """Records of trials that trained to the end (each wrote trials/NAME/record.json and its
    config.json). One that cannot be read is left out with a one-line warning, not the run."""
    out = []
    for f in sorted((run_dir / "trials").glob("*/record.json")):
        try:
            r = json.loads(f.read_text())
            from_dict(json.loads((f.parent / "config.json").read_text()))
            check_record(r)
        except (OSError, ValueError, RecursionError, OverflowError) as e:  # JSONDecodeError and ConfigError are ValueErrors
            print(f"warning: {f.parent.name}: its record cannot be used ({str(e).splitlines()[0]}); left out", file=sys.stderr)
            continue
        r["trial_dir"] = str(f.parent)
        out.append(r)
    return out


def check_record(r: Any) -> None:
    """ValueError unless `r` is a trial record as the trainable writes it (the fields the export reads)."""
    if not isinstance(r, dict):
        raise ValueError("not a JSON object")
    numbers = {"val_acc": float, "size_bytes": int, "hidden_size": int, "val_loss": float, "cost_bytes": int}
    optional = ("val_loss", "cost_bytes")
    for key, kind in numbers.items():
        v = r.get(key)
        if key in optional and key not in r:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or (kind is int and not isinstance(v, int)) or not abs(v) < 2**53:
            raise ValueError(f"{key} is {str(v)[:20]!r}")  # also NaN, infinities, and integers beyond a float's exact range
    if not isinstance(r.get("quant"), str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", r["quant"]):
        raise ValueError(f"quant is {str(r.get('quant'))[:40]!r}")  # it names the exported file
    sparsity = r.get("sparsity", 0.0)
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float) or not 0 <= sparsity <= 1:
        raise ValueError(f"sparsity is {str(sparsity)[:20]!r}")
    if r.get("protocol") != PROTOCOL_SPEAKERS:  # what a random-split row copies from its record
        for key, kind in (("seed", int), ("size_bytes_study", int | float)):
            v = r.get(key)
            if isinstance(v, bool) or not isinstance(v, kind) or not 0 <= v < 2**53:
                raise ValueError(f"{key} is {str(v)[:20]!r}")
        hash_ok = isinstance(r.get("split_hash"), str) and re.fullmatch(r"[0-9a-f]{12}", r["split_hash"])
        if not isinstance(r.get("split"), str) or not hash_ok:
            raise ValueError("split or split_hash is not what a trial writes")
    if r.get("protocol") == PROTOCOL_SPEAKERS:
        from search.speakers import FoldResult

        if not isinstance(r.get("folds"), list) or not r["folds"]:
            raise ValueError("no folds")
        for fold in r["folds"]:
            try:
                f = FoldResult.from_dict(fold)
                m = np.asarray(f.confusion)
                ok = f.n > 0 and m.shape == (10, 10) and m.dtype.kind in "iu" and int(m.sum()) == f.n
            except (KeyError, TypeError, AttributeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"a fold is {str(fold)[:60]}")
        for key in ("new_speaker_acc", "new_speaker_mean", "new_speaker_worst", "val_loss"):
            v = r.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{key} is {str(v)[:20]!r}")
        if not isinstance(r.get("worst_speaker"), str):
            raise ValueError("no worst_speaker")
        bad = next((k for k, v in r.items() if k.startswith("acc_") and (isinstance(v, bool) or not isinstance(v, int | float))), None)
        if bad:
            raise ValueError(f"{bad} is {str(r[bad])[:20]!r}")


def all_points(run_dir: Path) -> list[tuple[float, float, bool]]:
    """(KiB, ranked accuracy, finished) of the last report of every trial Ray recorded (faint dots)."""
    points = []
    for f in run_dir.glob("*/result.json"):
        try:
            lines = f.read_text().strip().splitlines()
        except (OSError, ValueError):  # a folder, unreadable, not UTF-8: no dot for this trial
            continue
        for line in reversed(lines):
            try:  # a process killed while Ray wrote the log leaves its last line cut: take the last whole one
                last = json.loads(line)
                point = (cost(last) / KIB, float(last["val_acc"]), bool(last.get("final")))
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError, OverflowError):
                continue
            if not math.isfinite(point[0]) or not math.isfinite(point[1]):
                continue
            if not last.get("infeasible"):
                points.append(point)
            break
    return points


def refit_config(cfg: Config) -> Config:
    """The configuration of a speaker-protocol member's deployable model: trained on every
    speaker (`all`), or, with a test speaker, on every other one and tested on it (`loso:T`)."""
    t = cfg.train.test_speaker
    return cfg.replace(train={"split": f"loso:{t}" if t else "all", "test_speaker": None})


def refit(trial_dir: str, out_dir: str, data_dir: str, cache_dir: str | None, estimate: dict[str, Any]) -> dict[str, Any]:
    """Retrain one front member of the speaker protocol with its settings (`refit_config`),
    write its artifact (with the fold estimate in its metadata) and predictions, and check it
    with search.verify; its record.
    Kept in `out_dir`: a second export of the same run reuses it."""
    from search.train import make_datamodule, quiet, save, test, train
    from search.verify import verify

    out = Path(out_dir)
    done = out / "refit.json"
    cfg = refit_config(from_dict(json.loads((Path(trial_dir) / "config.json").read_text())))
    reused = _reusable_refit(out, cfg.to_dict())  # only a refit of this very configuration
    if reused is not None:
        return reused
    quiet()
    dm = make_datamodule(cfg, data_dir, cache_dir)
    net, _, _ = train(cfg, dm, None, (), cache_dir)
    record = save(cfg, net, dm, out, estimate)
    record["test_acc"] = test(cfg, net, dm, out)
    # The numpy reference, from the artifact and the wavs alone: here, in parallel with the other refits.
    record["verify"] = verify(out / "model.safetensors", data_dir)
    record["files"] = {name: sha256_file(out / name) for name in REFIT_FILES}
    record["config"] = cfg.to_dict()  # what was refit: a refit folder swapped in from another run is not reused
    record["digest"] = _record_digest(record)
    write_json(done, record)
    return record


REFIT_FILES = ("model.safetensors", "predictions.json")  # what the export publishes from a refit


def _reusable_refit(out: Path, want: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The record of an earlier refit in `out` if it is whole and its files are still the ones it
    verified (same SHA-256); None (refit again) if anything is missing, cut short, edited or odd."""
    try:
        record = json.loads((out / "refit.json").read_text())
        whole = (
            isinstance(record, dict)
            and record.get("digest") == _record_digest(record)
            and (want is None or record.get("config") == want)
            and isinstance(record.get("verify"), dict)
            and isinstance(record["files"], dict)
            and all(record["files"].get(name) == sha256_file(out / name) for name in REFIT_FILES)
        )
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError):  # not there, cut short, odd
        return None
    return record if whole else None


def _record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of a refit record without its digest: an edited figure no longer matches it."""
    body = {k: v for k, v in record.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


def refit_all(front: list[dict[str, Any]], run_dir: Path, data_dir: str, cache_dir: str | None, workers: int) -> list[dict[str, Any]]:
    """`refit` of every member, `workers` at a time in fresh processes (spawned: the driver's
    torch state is not forked), in front order."""
    jobs = [(r["trial_dir"], str(run_dir / "refit" / Path(r["trial_dir"]).name), data_dir, cache_dir, estimate_of(r)) for r in front]
    if workers <= 1 or len(jobs) <= 1:
        return [refit(*j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(refit, *zip(*jobs, strict=True)))


def estimate_of(r: dict[str, Any]) -> dict[str, Any]:
    """A member's fold figures, as stored in its artifact: an estimate of new-speaker accuracy."""
    keys = [k for k in r if k.startswith(("new_speaker_", "acc_"))] + ["worst_speaker"]
    return {k: r[k] for k in keys if k in r} | {"source": "leave-one-speaker-out folds of the search (selected on them: optimistic)"}


def export(
    run_dir: str | Path, data_dir: str | Path | None = None, cache_dir: str | Path | None = None, workers: int | None = None
) -> dict[str, Any]:
    """Build the run's exported front; returns its summary (also in pareto.json)."""
    from search.verify import verify

    run_dir = Path(run_dir)
    settings_file = run_dir / "search.json"
    if not settings_file.is_file():
        raise DataError(f"{run_dir} is not a search run (no search.json)")
    try:
        settings = json.loads(settings_file.read_text())
        missing = {"name", "budget_bytes", "base", "data_dir", "cache_dir"} - set(settings)
    except (ValueError, TypeError, RecursionError) as e:
        raise DataError(f"{settings_file}: not a readable search settings file ({str(e).splitlines()[0]})") from None
    if missing:
        raise DataError(f"{settings_file}: not a search settings file (lacks {', '.join(sorted(missing))})")
    from search.run import check_settings

    try:
        check_settings(settings, settings_file)
    except SearchError as e:
        raise DataError(str(e).replace("the run cannot be resumed; start a new one", "not a run this version can export")) from None
    if not (run_dir / "trials").is_dir():
        # Without it there is no trial to export: refuse rather than replace the front with an empty one.
        raise DataError(f"{run_dir / 'trials'}: missing or not a folder; the run's trials are gone, nothing to export")
    budget = settings["budget_bytes"]
    data_dir = str(data_dir or settings["data_dir"])
    cache_dir = cache_dir or settings["cache_dir"]
    speakers = settings["base"]["train"]["split"] == PROTOCOL_SPEAKERS
    records = finished_records(run_dir)
    feasible = [r for r in records if cost(r) <= budget and (speakers or _has_model(r))]
    front = pareto_front(feasible)
    # The new front's files are made beside the old ones and swapped in at the end: an export that
    # fails half-way leaves the previous front (pareto.* and artifacts/) as it was.
    art_dir = run_dir / ".artifacts.new"
    shutil.rmtree(art_dir, ignore_errors=True)
    art_dir.mkdir(parents=True)
    try:
        summary = _write_front(run_dir, art_dir, settings, records, front, speakers, data_dir, cache_dir, workers, verify)
    except BaseException:
        shutil.rmtree(art_dir, ignore_errors=True)
        raise
    return summary


def _write_front(
    run_dir: Path,
    art_dir: Path,
    settings: dict[str, Any],
    records: list[dict[str, Any]],
    front: list[dict[str, Any]],
    speakers: bool,
    data_dir: str,
    cache_dir: Any,
    workers: int | None,
    verify: Any,
) -> dict[str, Any]:
    """Make the front's artifacts in `art_dir` and its figures beside them, then put everything in
    place: pareto.json, pareto.csv, the figures, and `art_dir` as artifacts/ (the old one replaced)."""
    budget = settings["budget_bytes"]
    if speakers:
        outputs = refit_all(front, run_dir, data_dir, cache_dir, workers or settings.get("cpus", os.cpu_count() or 1))
        pairs = enumerate(zip(front, outputs, strict=True))
        rows = [_speaker_row(rank, r, out, run_dir, art_dir) for rank, (r, out) in pairs]
    else:
        rows = _random_rows(front, run_dir, art_dir, data_dir, cache_dir, verify)
    if not rows and _old_front_size(run_dir) > 0:
        raise DataError(
            f"{run_dir / 'trials'}: no finished trial within the budget can be read or exported ({len(records)} records), "
            "but the run's exported front has members: kept as it was"
        )
    for row in rows:
        row["artifact"] = str(Path("artifacts") / Path(row["artifact"]).name)
    # The winner is chosen on what the search ranks (test accuracy only reports it): the top of the front.
    winner = max(rows, key=lambda x: (*record_key(x), -x["cost_bytes"])) if rows else None
    summary = {
        "name": settings["name"],
        "protocol": PROTOCOL_SPEAKERS if speakers else settings["base"]["train"]["split"],
        "test_speaker": settings["base"]["train"].get("test_speaker"),
        "budget_bytes": budget,
        "budget_on": settings.get("budget_on", "weights"),
        "trials_finished": len(records),
        "front": rows,
        "winner": winner,
    }
    # Figures first (the step most likely to fail on odd data), beside the new artifacts.
    figures = {"pareto.png": art_dir / ".pareto.png"}
    plot(figures["pareto.png"], all_points(run_dir), rows, budget, speakers, settings.get("budget_on", "weights"))
    if speakers and winner is not None:
        figures["confusion.png"] = art_dir / ".confusion.png"
        plot_confusions(figures["confusion.png"], winner)

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            fields = [k for k in (rows[0] if rows else {"rank": 0}) if k not in ("config", "folds")] + ["config"]
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for row in rows:
                w.writerow({**row, "config": json.dumps(row["config"], sort_keys=True)})

    write_json(run_dir / "pareto.json", summary)
    atomic_write(run_dir / "pareto.csv", write_csv)
    for name, made in figures.items():
        os.replace(made, run_dir / name)
    shutil.rmtree(run_dir / "artifacts", ignore_errors=True)
    art_dir.rename(run_dir / "artifacts")
    return summary


def _old_front_size(run_dir: Path) -> int:
    """Members of the front exported before: those pareto.json lists, or the artifacts there are
    (if pareto.json cannot be read); 0 if there are none."""
    try:
        listed = len(json.loads((run_dir / "pareto.json").read_text())["front"])
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        listed = 0
    return max(listed, len(list((run_dir / "artifacts").glob("*.safetensors"))))


def _has_model(r: dict[str, Any]) -> bool:
    """A random-split trial's front needs its weights and artifact; one that lost them is left out, with a warning."""
    trial = Path(r["trial_dir"])
    missing = [n for n in ("weights.safetensors", "model.safetensors") if not (trial / n).is_file()]
    if r.get("artifact") and missing:
        print(f"warning: {trial.name}: {', '.join(missing)} missing; left out of the front", file=sys.stderr)
    return bool(r.get("artifact")) and not missing


def _copy_artifact(rank: int, r: dict[str, Any], src: Path, art_dir: Path) -> Path:
    stem = f"{rank:02d}-{r['quant']}-h{r['hidden_size']}-{r['size_bytes']}B"
    artifact = art_dir / f"{stem}.safetensors"
    shutil.copyfile(src / "model.safetensors", artifact)
    shutil.copyfile(src / "predictions.json", art_dir / f"{stem}.predictions.json")
    return artifact


def on_chip(artifact: Path, cfg: Config) -> dict[str, Any]:
    """The member's C library on a Cortex-M4 (search.deploy): flash (weights, tables, code) and
    RAM (static, stack) measured from a real link when arm-none-eabi-gcc is installed; otherwise
    the calibrated prediction, and `flash_measured` false. None where it cannot deploy (e.g. an
    FFT length that is not a power of two), with the reason in `flash_note`."""
    from search.deploy import DeployError, measure, predict_flash

    keys = ("flash_bytes", "ram_bytes", "weights_bytes", "tables_bytes", "code_bytes", "static_bytes", "stack_bytes")
    out: dict[str, Any] = {"flash_measured": False, "flash_note": ""}
    try:
        report = measure(artifact)
        out["flash_measured"] = True
    except DeployError as e:
        out["flash_note"] = str(e)
        try:
            report = predict_flash(cfg)
        except DeployError:
            return out | dict.fromkeys(keys)
    d = report.to_dict()
    return out | {k: d[k] for k in keys}


def _common(rank: int, r: dict[str, Any], cfg: Config, artifact: Path, run_dir: Path, check: dict[str, Any]) -> dict[str, Any]:
    return {
        "rank": rank,
        "trial": Path(r["trial_dir"]).name,
        "size_bytes": r["size_bytes"],
        "size_kib": round(r["size_bytes"] / KIB, 3),
        "cost_bytes": cost(r),  # what the budget counts: size_bytes, or the predicted flash with --budget-on flash
        "quant": r["quant"],
        "hidden_size": cfg.model.hidden_size,
        "n_mfcc": cfg.features.n_mfcc,
        "hop_length": cfg.features.hop_length,
        "n_fft": cfg.features.n_fft,
        "cmvn": cfg.features.cmvn,
        "sparsity": r.get("sparsity", 0.0),
        "verify_agree": check["agree"],
        "artifact": str(artifact.relative_to(run_dir)),
        "sha256": sha256_file(artifact),
        **on_chip(artifact, cfg),
    }


def _speaker_row(rank: int, r: dict, out: dict, run_dir: Path, art_dir: Path) -> dict[str, Any]:
    cfg = from_dict(json.loads((Path(r["trial_dir"]) / "config.json").read_text()))
    src = run_dir / "refit" / Path(r["trial_dir"]).name
    artifact = _copy_artifact(rank, r, src, art_dir)
    check = out["verify"]
    figures = {k: r[k] for k in r if k.startswith(("new_speaker_", "acc_"))}
    return {
        **_common(rank, r, cfg, artifact, run_dir, check),
        # What the search ranks: accuracy pooled over the held-out speakers of the folds.
        "val_acc": r["val_acc"],
        "val_loss": r["val_loss"],
        **figures,
        "worst_speaker": r["worst_speaker"],
        "test_speaker": cfg.train.test_speaker,
        "test_acc": out["test_acc"],  # on the test speaker, once (None without --test-speaker)
        "verify_test_acc": check["test_acc"],
        "refit_split": refit_config(cfg).train.split,
        "folds": r["folds"],
        "config": cfg.to_dict(),
    }


def _random_rows(front: list[dict], run_dir: Path, art_dir: Path, data_dir: str, cache_dir: Any, verify: Any) -> list[dict[str, Any]]:
    from search.train import load_net, make_datamodule, quiet, test

    quiet()
    datamodules: dict[str, Any] = {}
    rows = []
    for rank, r in enumerate(front):
        trial = Path(r["trial_dir"])
        cfg = from_dict(json.loads((trial / "config.json").read_text()))
        key = json.dumps([cfg.features.to_dict(), cfg.augment.to_dict(), cfg.train.split, cfg.train.seed])
        if key not in datamodules:
            datamodules[key] = make_datamodule(cfg, data_dir, cache_dir)
        try:
            test_acc = test(cfg, load_net(cfg, trial / "weights.safetensors"), datamodules[key], trial)
            artifact = _copy_artifact(rank, r, trial, art_dir)
            check = verify(artifact, data_dir)
        except (SafetensorError, ArtifactError, RuntimeError, OSError) as e:  # damaged files: this member only
            print(f"warning: {trial.name}: {str(e).splitlines()[0]}; left out of the front", file=sys.stderr)
            continue
        rows.append(
            {
                **_common(rank, r, cfg, artifact, run_dir, check),
                "val_acc": r["val_acc"],
                "val_loss": r.get("val_loss"),
                "test_acc": test_acc,
                "verify_test_acc": check["test_acc"],
                "size_bytes_study": r["size_bytes_study"],
                "seed": r["seed"],
                "split": r["split"],
                "split_hash": r["split_hash"],
                "config": cfg.to_dict(),
            }
        )
    return rows


def plot(
    path: Path,
    points: list[tuple[float, float, bool]],
    front: list[dict[str, Any]],
    budget: int,
    speakers: bool = False,
    budget_on: str = "weights",
) -> None:
    """Accuracy against size (log KiB): every trial faint, the front, the budget. Speaker
    protocol: new-speaker accuracy (pooled over the folds) with each member's mean and worst
    speaker; random protocol: validation and test accuracy, and the manual study's points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = "new-speaker accuracy, folds" if speakers else "validation"
    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    done = [(k, a) for k, a, fin in points if fin]
    early = [(k, a) for k, a, fin in points if not fin]
    if done:
        ax.scatter(*zip(*done, strict=True), s=14, color="tab:blue", alpha=0.25, label=f"trials ({ranked})")
    if early:
        ax.scatter(
            *zip(*early, strict=True), s=14, color="grey", marker="x", alpha=0.3, label=f"stopped early or interrupted ({ranked}, partial)"
        )
    if front:
        kib = [r["cost_bytes"] / KIB for r in front]
        ax.step(kib, [r["val_acc"] for r in front], where="post", color="tab:blue", lw=1.5, label=f"Pareto front ({ranked}, pooled)")
        if speakers:
            ax.plot(kib, [r["new_speaker_mean"] for r in front], "o", color="tab:purple", ms=5, label="front: mean over speakers")
            ax.plot(kib, [r["new_speaker_worst"] for r in front], "v", color="tab:orange", ms=5, label="front: worst speaker")
            tested = [(k, r["test_acc"]) for k, r in zip(kib, front, strict=True) if r.get("test_acc") is not None]
            if tested:
                ax.plot(*zip(*tested, strict=True), "o", color="tab:red", ms=6, label=f"front: test speaker {front[0]['test_speaker']}")
        else:
            ax.plot(kib, [r["test_acc"] for r in front], "o", color="tab:red", ms=6, label="front, test accuracy")
    if not speakers and budget_on == "weights":
        for i, (label, kib, acc) in enumerate(STUDY_POINTS):
            ax.plot(kib, acc, "s", color="black", ms=6, label="manual study (test)" if i == 0 else None)
            # Labels alternately above and below: the pruned and PTQ points nearly coincide.
            dy = 4 if i % 2 == 0 else -10
            ax.annotate(label.replace("study ", ""), (kib, acc), textcoords="offset points", xytext=(5, dy), fontsize=7)
    ax.axvline(budget / KIB, color="tab:green", ls="--", label=f"budget {budget / KIB:g} KiB")
    ax.set_xscale("log")
    study = not speakers and budget_on == "weights"
    right = [k for k, _, _ in points] + ([kib for _, kib, _ in STUDY_POINTS] if study else []) + [budget / KIB]
    ax.set_xlim(right=3 * max(right))  # room for the labels
    what = "Cortex-M4 flash of the whole C library, KiB (predicted)" if budget_on == "flash" else "model size, KiB (artifact payload"
    ax.set_xlabel(
        what
        + ("" if speakers or budget_on == "flash" else "; study points in the study's convention")
        + ("" if budget_on == "flash" else ")")
    )
    ax.set_ylabel("accuracy on speakers never heard in training" if speakers else "accuracy")
    lows = [a for _, a, _ in points] + [r.get("new_speaker_worst", 1.0) for r in front]
    ax.set_ylim(max(0.0, min([0.6, *lows]) - 0.02), 1.005)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusions(path: Path, member: dict[str, Any]) -> None:
    """One confusion matrix per held-out speaker of a front member's folds (rows: the digit
    said, columns: the digit predicted; clip counts), titled with the speaker's accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folds = member["folds"]
    cols = min(3, len(folds))
    rows = (len(folds) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.3 * rows + 0.6), dpi=120, squeeze=False)
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
    plt.close(fig)


def _kib(n: int | None) -> str:
    return "-" if n is None else f"{n / KIB:.2f}"


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    """The front as a table (KiB of weights, KiB of the Cortex-M4 library), then the winner."""
    rows = summary["front"]
    speakers = summary.get("protocol") == PROTOCOL_SPEAKERS
    print(f"\nPareto front of {summary['name']} ({len(rows)} of {summary['trials_finished']} finished trials):")
    if speakers:
        test = summary.get("test_speaker")
        print(
            f"  {'KiB':>8} {'pooled':>7} {'mean':>7} {'worst':>7} {'test:' + test if test else '':>12}  model (new-speaker accuracy, folds)"
        )
        for r in rows:
            t = f"{r['test_acc']:12.4f}" if r.get("test_acc") is not None else " " * 12
            print(
                f"  {r['size_kib']:8.2f} {r['val_acc']:7.4f} {r['new_speaker_mean']:7.4f} {r['new_speaker_worst']:7.4f} {t}  "
                f"{r['quant']} h{r['hidden_size']} mfcc{r['n_mfcc']} cmvn {r['cmvn']} (worst: {r['worst_speaker']})"
            )
    else:
        print(f"  {'KiB':>8} {'flash':>7} {'val':>7} {'test':>7} {'verify':>7}  model")
        for r in rows:
            print(
                f"  {r['size_kib']:8.2f} {_kib(r.get('flash_bytes')):>7} {r['val_acc']:7.4f} {r['test_acc']:7.4f} "
                f"{r['verify_test_acc']:7.4f}  "
                f"{r['quant']} h{r['hidden_size']} mfcc{r['n_mfcc']} sparsity {r['sparsity']:.0%}"
            )
    w = summary["winner"]
    if w is None:
        print("no trial finished within the budget yet")
        return
    if speakers:
        from search.speakers import FoldResult, SpeakerTable

        table = SpeakerTable(tuple(FoldResult.from_dict(f) for f in w["folds"]))
        print(
            f"winner (best new-speaker accuracy within {summary['budget_bytes'] / KIB:g} KiB): {w['quant']} h{w['hidden_size']}, "
            f"{w['size_bytes']} B = {w['size_kib']:.2f} KiB; each speaker held out of training in turn:"
        )
        print(table.format())
        print(
            "  These fold figures are the search's own ranking signal, so the winner's are optimistic; "
            + (
                f"on the test speaker {w['test_speaker']}, never seen by the search: {w['test_acc']:.4f}."
                if w.get("test_acc") is not None
                else "`--test-speaker NAME` keeps one speaker out of the whole search for an unbiased figure."
            )
        )
        trained_on = "every speaker" if w["refit_split"] == "all" else "every speaker but the test speaker"
        print(f"  artifact (retrained on {trained_on}): {run_dir / w['artifact']}")
        print(f"  front: {run_dir / 'pareto.csv'}, {run_dir / 'pareto.json'}, {run_dir / 'pareto.png'}, {run_dir / 'confusion.png'}")
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
    except (DataError, ArtifactError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a cache or data path that is a file, unreadable, ...
        print(f"error: {e.filename or args.run_dir}: {e.strerror or e}", file=sys.stderr)
        return 2
    print_summary(summary, Path(args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
