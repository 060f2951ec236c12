"""Deploy one artifact: check it, write its C library into a folder, with test clips of its split
compiled into the device test program when the data is at hand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsdd.audio import parse_name
from fsdd.corpora import as_corpora
from fsdd.errors import DataError, DeployError
from search.deploy.clips import pcm16, split_clips
from search.deploy.library import prepare_out, refuse_overlap, render_library, write_library
from search.deploy.spec import ModelSpec, from_config, read_artifact


@dataclass(frozen=True)
class Deployment:
    out: Path
    spec: ModelSpec
    meta: dict[str, str]
    device_clips: tuple[str, ...]  # names of the clips compiled into the device test program
    note: str  # why the device test program has no real clips, or ""


def pick(wavs: list[Path], n: int) -> list[Path]:
    """Up to n clips, one per digit in turn (first of each digit first), in split order."""
    by_digit: dict[int, list[Path]] = {}
    for w in wavs:
        by_digit.setdefault(parse_name(w.name)[0], []).append(w)
    out: list[Path] = []
    rank = 0
    while len(out) < n and any(rank < len(v) for v in by_digit.values()):
        out += [v[rank] for _, v in sorted(by_digit.items()) if rank < len(v)][: n - len(out)]
        rank += 1
    return out


def deploy(
    artifact: str | Path,
    out: str | Path,
    force: bool = False,
    data_dir: Any = None,
    device_clips: int = 10,
    transform: str = "auto",
) -> Deployment:
    """Write the library of `artifact` into `out` (refused if it exists and is not empty, unless
    `force`). Up to `device_clips` test clips of the artifact's split (from `data_dir`, else
    $FSDD_DIR or the download cache; never downloaded here) go into the device test program.
    `transform`: fft, dft, or auto (the one that suits the model's n_fft; docs/deploy.md).

    Everything is checked, and every file rendered, before `out` is touched: a bad artifact, or an
    `out` that holds the artifact or the data, leaves it as it was."""
    artifact, out = Path(artifact), Path(out)
    folders = [Path(c.path) for c in as_corpora(data_dir)] if data_dir is not None else []
    inputs = [("the artifact", artifact)] + [("the data folder", f) for f in folders]
    refuse_overlap(out, inputs)
    meta, tensors, cfg = read_artifact(artifact)
    spec = from_config(cfg, tensors, where=str(artifact), transform=transform)
    clips, note = [], ""
    if device_clips > 0:
        try:
            wavs = pick(split_clips(meta, data_dir), device_clips)
            clips = [(w.name, pcm16(w)) for w in wavs]
        except DataError as e:
            note = f"no test clips compiled in ({str(e).splitlines()[0]}); the device program classifies one second of silence"
        else:
            refuse_overlap(out, [("the data folder", wavs[0].parent)] + [("the clip", w) for w in wavs])
    rendered = render_library(spec, artifact.name, meta, clips)
    try:
        prepare_out(out, force)
        write_library(spec, out, artifact.name, rendered=rendered)
    except OSError as e:
        raise DeployError(f"--out {out}: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")) from None
    return Deployment(out, spec, meta, tuple(name for name, _ in clips), note)
