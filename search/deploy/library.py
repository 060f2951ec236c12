"""Write the C library of one artifact into a folder: sources, vendored CMSIS-DSP, Makefile, harness."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from search.deploy.emit import clips_files, model_header, model_source
from search.deploy.errors import DeployError
from search.deploy.spec import ModelSpec

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
CMSIS = HERE / "cmsis"
LIBRARY_FILES = ("kws.h", "kws.c")
HARNESS_FILES = ("Makefile", "host_main.c", "device_main.c", "measure_main.c", "startup.c", "link.ld")


def refuse_overlap(out: Path, inputs: Sequence[tuple[str, Path]]) -> None:
    """DeployError if `out` is, or contains, one of the `inputs` (what, path): replacing its
    contents would delete them. Checked on the paths as given and with every link resolved."""
    outs = {Path(os.path.abspath(out)), out.resolve()}
    for what, path in inputs:
        for p in {Path(os.path.abspath(path)), path.parent.resolve() / path.name, path.resolve()}:
            if any(o == p or o in p.parents for o in outs):
                raise DeployError(f"--out {out} is or contains {what} {path}: choose a folder outside it (its contents are replaced)")


GENERATED_FILES = ("kws_model.h", "kws_model.c", "kws_clips.h", "kws_clips.c")
OWNED = frozenset(LIBRARY_FILES + HARNESS_FILES + GENERATED_FILES + ("cmsis", "build"))  # what a deploy writes, or make builds


def prepare_out(out: Path, force: bool) -> None:
    """Create `out`, refusing one that exists and is not empty unless `force`; then its contents
    are replaced, but only if they are a library that search.deploy wrote (every entry one of its
    own names): --force never deletes what the user put there (data, artifacts, other work)."""
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise DeployError(f"--out {out} exists and is not empty (pass --force to replace its contents)")
        foreign = sorted(c.name for c in out.iterdir() if c.name not in OWNED)
        if foreign:
            raise DeployError(
                f"--out {out} holds {foreign[0]!r}{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}, "
                "which search.deploy did not write: --force replaces only a library folder; choose another --out"
            )
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def render_library(
    spec: ModelSpec,
    source: str,
    meta: dict[str, str] | None = None,
    clips: Sequence[tuple[str, np.ndarray]] = (),
) -> dict[str, str]:
    """The generated files of the library by name, rendered in memory (so that nothing is written
    when rendering fails). `clips` (name, int16 samples) are compiled into the device test program;
    without them it classifies one second of silence."""
    header, body = clips_files(list(clips) or [("silence", np.zeros(8000, dtype=np.int16))])
    return {
        "kws_model.h": model_header(spec, source),
        "kws_model.c": model_source(spec, source, meta),
        "kws_clips.h": header,
        "kws_clips.c": body,
    }


def write_library(
    spec: ModelSpec,
    out: Path,
    source: str,
    meta: dict[str, str] | None = None,
    clips: Sequence[tuple[str, np.ndarray]] = (),
    rendered: dict[str, str] | None = None,
) -> None:
    """Write every file of the library into the existing folder `out`: the templates, CMSIS-DSP
    for the FFT, and the generated files (`rendered`, else render_library of the other arguments)."""
    files = rendered if rendered is not None else render_library(spec, source, meta, clips)
    for name in LIBRARY_FILES + HARNESS_FILES:
        shutil.copyfile(TEMPLATES / name, out / name)
    if spec.front.transform == "fft":  # the DFT is kws.c's own: no vendored code
        shutil.copytree(CMSIS, out / "cmsis", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in files.items():
        (out / name).write_text(text)
