"""Write the C library of one artifact into a folder: sources, vendored CMSIS-DSP, Makefile, harness."""

from __future__ import annotations

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


def prepare_out(out: Path, force: bool) -> None:
    """Create `out`, refusing one that exists and is not empty unless `force` (then its contents are replaced)."""
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise DeployError(f"--out {out} exists and is not empty (pass --force to replace its contents)")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_library(
    spec: ModelSpec,
    out: Path,
    source: str,
    meta: dict[str, str] | None = None,
    clips: Sequence[tuple[str, np.ndarray]] = (),
) -> None:
    """Write every file of the library into the existing folder `out`. `clips` (name, int16 samples)
    are compiled into the device test program; without them it classifies one second of silence."""
    for name in LIBRARY_FILES + HARNESS_FILES:
        shutil.copyfile(TEMPLATES / name, out / name)
    if spec.front.transform == "fft":  # the DFT is kws.c's own: no vendored code
        shutil.copytree(CMSIS, out / "cmsis", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    (out / "kws_model.h").write_text(model_header(spec, source))
    (out / "kws_model.c").write_text(model_source(spec, source, meta))
    header, body = clips_files(list(clips) or [("silence", np.zeros(8000, dtype=np.int16))])
    (out / "kws_clips.h").write_text(header)
    (out / "kws_clips.c").write_text(body)
