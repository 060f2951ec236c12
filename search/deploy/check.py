"""The library's agreement checks: the host build against search.verify's numpy reference on every
clip of the artifact's split, and the Cortex-M4 build under QEMU against the host build."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fsdd.audio import parse_name
from search.artifact import dense_weights
from search.deploy.clips import reference_logits, split_clips
from search.deploy.errors import DeployError
from search.deploy.runner import run_device, run_host
from search.deploy.spec import read_artifact
from search.verify import VerifyError, read_predictions

INSTRUCTIONS_PER_TICK = 40  # QEMU -icount shift=0: 1 instruction per ns; the board's timer runs at 25 MHz


@dataclass(frozen=True)
class HostAgreement:
    """The host build against the numpy reference on every clip of the artifact's split."""

    n_clips: int
    agree: int  # clips whose predicted class equals the reference's
    max_logit_diff: float  # max |C logit - reference logit| over clips and classes
    accuracy: float  # the C predictions against the labels
    torch_agree: float | None  # against the torch model's predictions.json beside the artifact, if any

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DeviceAgreement:
    """The Cortex-M4 build under QEMU against the host build on the compiled-in clips."""

    n_clips: int
    same_pred: int  # clips with the host's prediction
    same_logits: int  # clips whose ten float32 logits equal the host's bit for bit
    stack_painted_bytes: int  # deepest stack kws_classify used, measured by stack painting
    instructions: tuple[int, ...]  # per clip, under -icount shift=0 (to within 40); 0 without -icount

    def to_dict(self) -> dict:
        return asdict(self)


def torch_predictions(artifact: str | Path) -> dict[str, int] | None:
    """The torch model's predictions beside the artifact (NAME.predictions.json, else
    predictions.json), as search.verify reads them; None if there are none; DeployError with one
    line if the file is unreadable or not {wav name: class 0-9}."""
    artifact = Path(artifact)
    beside = artifact.with_suffix(".predictions.json")
    path = beside if beside.is_file() else artifact.parent / "predictions.json"
    if not path.is_file():
        return None
    try:
        return read_predictions(path)
    except VerifyError as e:
        raise DeployError(str(e).splitlines()[0]) from None


def check_host(artifact: str | Path, folder: str | Path, data_dir: str | Path | None = None) -> HostAgreement:
    """Build the host program in `folder` (the artifact's deployed library) and compare it with the
    numpy reference on every clip of the artifact's split."""
    artifact = Path(artifact)
    meta, tensors, _ = read_artifact(artifact)
    torch_pred = torch_predictions(artifact)
    weights = dense_weights(meta, tensors)
    wavs = split_clips(meta, data_dir)
    got = run_host(Path(folder), wavs)
    ref = [reference_logits(meta, weights, w) for w in wavs]
    diffs = [float(np.max(np.abs(np.array(g.logits) - r))) for g, r in zip(got, ref, strict=True)]
    agree = sum(int(g.pred == int(np.argmax(r))) for g, r in zip(got, ref, strict=True))
    labels = [parse_name(w.name)[0] for w in wavs]
    torch_agree = None
    if torch_pred:
        pairs = [(g.pred, torch_pred[w.name]) for g, w in zip(got, wavs, strict=True) if w.name in torch_pred]
        torch_agree = sum(int(a == b) for a, b in pairs) / len(pairs) if pairs else None
    acc = sum(int(g.pred == y) for g, y in zip(got, labels, strict=True)) / len(wavs)
    return HostAgreement(len(wavs), agree, max(diffs), acc, torch_agree)


def check_device(folder: str | Path, wavs: list[Path], count_instructions: bool = False) -> DeviceAgreement:
    """Run `make qemu` in `folder` and compare with the host build on the same clips: `wavs` holds
    the compiled-in clips' files (found by name; e.g. every clip of the artifact's split)."""
    folder = Path(folder)
    dev = run_device(folder, "-icount shift=0" if count_instructions else "")
    by_name = {w.name: w for w in wavs}
    missing = [r.name for r in dev.results if r.name not in by_name]
    if missing:
        raise DeployError(f"device clip {missing[0]} is not among the given wavs")
    host = {r.name: r for r in run_host(folder, [by_name[r.name] for r in dev.results])}
    same_pred = sum(int(host[r.name].pred == r.pred) for r in dev.results)
    same_bits = sum(int(host[r.name].logits == r.logits) for r in dev.results)
    instr = tuple(INSTRUCTIONS_PER_TICK * t for t in dev.ticks) if count_instructions else tuple(0 for _ in dev.ticks)
    return DeviceAgreement(len(dev.results), same_pred, same_bits, dev.stack_bytes, instr)
