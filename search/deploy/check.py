"""The library's agreement checks: the host build against search.verify's numpy reference on every
clip of the artifact's split, and the Cortex-M4 build under QEMU against the host build."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fsdd.audio import parse_name
from fsdd.errors import DeployError
from search.artifact import dense_weights
from search.deploy.clips import conversion_note, host_inputs, reference_logits, split_clips
from search.deploy.runner import run_device, run_host
from search.deploy.spec import read_artifact
from search.verify import read_predictions

INSTRUCTIONS_PER_TICK = 40  # QEMU -icount shift=0: 1 instruction per ns; the board's timer runs at 25 MHz


@dataclass(frozen=True)
class HostAgreement:
    """The host build against the numpy reference on every clip of the artifact's split."""

    n_clips: int
    agree: int  # clips whose predicted class equals the reference's
    max_logit_diff: float  # max |C logit - reference logit| over clips and classes
    accuracy: float  # the C predictions against the labels
    torch_agree: float | None  # against the torch model's predictions.json beside the artifact, if any
    converted: int = 0  # clips converted to 16-bit mono PCM first (clips.host_inputs): both sides read the copies

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
    converted: int = 0  # of the host program's inputs, clips converted to 16-bit mono PCM (clips.host_inputs)

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
    return read_predictions(path)


def note(message: str) -> None:
    """Print `note: MESSAGE` on stderr (one line): what a check did that the user should know."""
    print(f"note: {message}", file=sys.stderr)


def check_host(artifact: str | Path, folder: str | Path, data_dir: str | Path | None = None) -> HostAgreement:
    """Build the host program in `folder` (the artifact's deployed library) and compare it with the
    numpy reference on every clip of the artifact's split.

    Every clip is read by the reference first (a clip read_wav refuses is a DataError naming it, not
    a host failure). The host program reads 16-bit PCM wavs itself, any channel count, mixed down as
    read_wav mixes them; a clip of another encoding is converted first (clips.host_inputs: a 16-bit
    mono copy in a temporary folder, read by both sides), with one `note:` line on stderr saying how
    many and why. DeployError if the host program fails to build or refuses a clip."""
    artifact = Path(artifact)
    meta, tensors, _ = read_artifact(artifact)
    torch_pred = torch_predictions(artifact)
    weights = dense_weights(meta, tensors)
    wavs = split_clips(meta, data_dir)
    with tempfile.TemporaryDirectory(prefix="kws-check-") as tmp:
        inputs, kinds = host_inputs(wavs, Path(tmp))
        ref = [reference_logits(meta, weights, w) for w in inputs]
        if kinds:
            note(f"--check: {conversion_note(kinds, len(wavs))}")
        got = run_host(Path(folder), inputs)
    diffs = [float(np.max(np.abs(np.array(g.logits) - r))) for g, r in zip(got, ref, strict=True)]
    agree = sum(int(g.pred == int(np.argmax(r))) for g, r in zip(got, ref, strict=True))
    labels = [parse_name(w.name)[0] for w in wavs]
    torch_agree = None
    if torch_pred:
        pairs = [(g.pred, torch_pred[w.name]) for g, w in zip(got, wavs, strict=True) if w.name in torch_pred]
        torch_agree = sum(int(a == b) for a, b in pairs) / len(pairs) if pairs else None
    acc = sum(int(g.pred == y) for g, y in zip(got, labels, strict=True)) / len(wavs)
    return HostAgreement(len(wavs), agree, max(diffs), acc, torch_agree, sum(kinds.values()))


def check_device(folder: str | Path, wavs: list[Path], count_instructions: bool = False) -> DeviceAgreement:
    """Run `make qemu` in `folder` and compare with the host build on the same clips: `wavs` holds
    the compiled-in clips' files (found by name; e.g. every clip of the artifact's split). The
    compiled-in clips hold clips.pcm16's samples; the host program reads the same (a clip of an
    encoding other than 16-bit PCM converted first, as check_host does, with one `note:` line)."""
    folder = Path(folder)
    dev = run_device(folder, "-icount shift=0" if count_instructions else "")
    by_name = {w.name: w for w in wavs}
    missing = [r.name for r in dev.results if r.name not in by_name]
    if missing:
        raise DeployError(f"device clip {missing[0]} is not among the given wavs")
    with tempfile.TemporaryDirectory(prefix="kws-check-") as tmp:
        inputs, kinds = host_inputs([by_name[r.name] for r in dev.results], Path(tmp))
        if kinds:
            note(f"--device: {conversion_note(kinds, len(inputs), 'the device build (its compiled-in clips) and the host build')}")
        host = {r.name: r for r in run_host(folder, inputs)}
    same_pred = sum(int(host[r.name].pred == r.pred) for r in dev.results)
    same_bits = sum(int(host[r.name].logits == r.logits) for r in dev.results)
    instr = tuple(INSTRUCTIONS_PER_TICK * t for t in dev.ticks) if count_instructions else tuple(0 for _ in dev.ticks)
    return DeviceAgreement(len(dev.results), same_pred, same_bits, dev.stack_bytes, instr, sum(kinds.values()))
