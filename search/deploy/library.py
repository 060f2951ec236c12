"""Write the C library of one artifact into a folder: sources, vendored CMSIS-DSP, Makefile, harness."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fsdd.errors import DeployError
from fsdd.files import resolved
from search.deploy.emit import clips_files, model_header, model_source
from search.deploy.spec import ModelSpec

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
CMSIS = HERE / "cmsis"
LIBRARY_FILES = ("kws.h", "kws.c")
HARNESS_FILES = ("Makefile", "host_main.c", "device_main.c", "measure_main.c", "startup.c", "link.ld")


def refuse_overlap(out: Path, inputs: Sequence[tuple[str, Path]]) -> None:
    """DeployError if `out` is, or contains, one of the `inputs` (what, path): replacing its
    contents would delete them. Checked on the paths as given and with every link resolved."""
    outs = {Path(os.path.abspath(out)), resolved(out, "--out")}
    for what, path in inputs:
        for p in {Path(os.path.abspath(path)), resolved(path.parent, what) / path.name, resolved(path, what)}:
            if any(o == p or o in p.parents for o in outs):
                raise DeployError(f"--out {out} is or contains {what} {path}: choose a folder outside it (its contents are replaced)")


GENERATED_FILES = ("kws_model.h", "kws_model.c", "kws_clips.h", "kws_clips.c")
MANIFEST = ".kws-deploy.json"  # every file a deploy wrote: what --force may replace
BUILD_OUTPUTS = frozenset({"kws_host", "kws_device.elf", "kws_measure.elf", "kws_measure.map"})  # the Makefile's, in build/
BUILD_OBJECT_DIRS = frozenset({"arm", "harness", "bare"})  # build/<dir>/*.o, *.ci, *.su


def _is_build_output(rel: Path) -> bool:
    parts = rel.parts
    if len(parts) == 2 and parts[0] == "build":
        return parts[1] in BUILD_OUTPUTS
    return len(parts) == 3 and parts[0] == "build" and parts[1] in BUILD_OBJECT_DIRS and rel.suffix in (".o", ".ci", ".su", ".d")


def _foreign(out: Path) -> list[str]:
    """Files, links and folders under `out` that neither a deploy wrote (its manifest lists them)
    nor its Makefile builds; everything, if there is no readable manifest."""
    try:
        written = set(json.loads((out / MANIFEST).read_text())["files"])
    except (OSError, ValueError, TypeError, KeyError):
        written = set()
    dirs = {"build"} | {f"build/{d}" for d in BUILD_OBJECT_DIRS}
    dirs |= {p.as_posix() for name in written for p in Path(name).parents if p != Path(".")}
    foreign = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if path.is_dir() and not path.is_symlink():
            if rel.as_posix() not in dirs:  # a folder of the user's, even an empty one
                foreign.append(rel.as_posix())
            continue
        if rel.as_posix() == MANIFEST or (path.is_file() and not path.is_symlink() and _is_build_output(rel)):
            continue
        if path.is_symlink() or not path.is_file() or rel.as_posix() not in written:
            foreign.append(rel.as_posix())
    return foreign


def prepare_out(out: Path, force: bool) -> None:
    """Create `out`, refusing one that exists and is not empty unless `force`. Then its contents
    are replaced, but only if every file in it is one a deploy wrote (the manifest) or one its
    Makefile builds: --force never deletes what the user put there."""
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise DeployError(f"--out {out} exists and is not empty (pass --force to replace its contents)")
        foreign = _foreign(out)
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise DeployError(
                f"--out {out} holds {foreign[0]!r}{more}, which search.deploy did not write (or which changed since): "
                "--force replaces only a library folder it wrote; choose another --out"
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
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    (out / MANIFEST).write_text(json.dumps({"files": written}, indent=1))
