"""What a model's C library costs on a Cortex-M4, measured from a real link: `measure(artifact)`.

The library is linked behind a bare harness (no C library start-up, printf or semihosting;
templates/measure_main.c) with -ffunction-sections -fdata-sections -Wl,--gc-sections, and its
link map is read: flash is text + rodata + data of the library's objects and of the libm /
libc / libgcc archive members they pull in (plus alignment padding before them); RAM is their
.data + .bss plus the worst-case stack of kws_classify from GCC's call graph (stack.py).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from fsdd.errors import DeployError
from search.deploy.library import write_library
from search.deploy.mapfile import FLASH_OUTPUTS, RAM_OUTPUTS, InputSection, parse_map
from search.deploy.spec import ModelSpec, load
from search.deploy.stack import worst_stack
from search.deploy.toolchain import ARM_CC, make, require

TABLE_PREFIXES = (".rodata.kws_t_", ".rodata.twiddleCoef_", ".rodata.armBitRevIndexTable", ".rodata.kws_cfft")
WEIGHT_PREFIX = ".rodata.kws_w_"


@dataclass(frozen=True)
class FlashReport:
    """Bytes a model's library adds to a Cortex-M4 firmware image (start-up code and the caller's
    PCM buffer excluded). flash_bytes = weights + tables + code; ram_bytes = static + stack."""

    weights_bytes: int  # the artifact's tensors, = search.size.size_bytes(cfg)
    tables_bytes: int  # front-end and FFT tables
    code_bytes: int  # instructions and other read-only data of the library, libm/libc/libgcc members included
    flash_bytes: int
    static_bytes: int  # .data + .bss of the library
    stack_bytes: int  # worst-case stack of kws_classify
    ram_bytes: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def report(weights: int, tables: int, code: int, static: int, stack: int) -> FlashReport:
    return FlashReport(weights, tables, code, weights + tables + code, static, stack, static + stack)


def _is_library(origin: str) -> bool:
    return origin.startswith("build/arm/")


def breakdown(sections: list[InputSection], origins: set[str]) -> tuple[int, int, int, int]:
    """(weights, tables, code, static) bytes of the library's sections."""
    weights = tables = code = static = 0
    for s in sections:
        if s.origin not in origins:
            continue
        if s.output in RAM_OUTPUTS:
            static += s.size
        if s.output not in FLASH_OUTPUTS:
            continue
        if s.name.startswith(WEIGHT_PREFIX):
            weights += s.size
        elif s.name.startswith(TABLE_PREFIXES):
            tables += s.size
        else:
            code += s.size
    return weights, tables, code, static


def measure_folder(folder: Path, spec: ModelSpec) -> FlashReport:
    """Link the library written in `folder` for the Cortex-M4 (`make measure`) and read its map."""
    require(ARM_CC)
    make(folder, "measure")
    link_map = parse_map((folder / "build" / "kws_measure.map").read_text())
    origins = link_map.origins_of(_is_library)
    weights, tables, code, static = breakdown(list(link_map.sections), origins)
    want = sum(spec.tensor_bytes.values())
    if weights != want:
        raise DeployError(f"{folder}: the linked weights take {weights} bytes, the artifact's payload is {want}")
    stack = worst_stack(sorted((folder / "build" / "arm").glob("*.ci")), folder / "build" / "kws_measure.elf")
    return report(weights, tables, code, static, stack)


def measure(artifact: str | Path, workdir: str | Path | None = None, transform: str = "auto") -> FlashReport:
    """Build the artifact's library for the Cortex-M4 in a scratch folder (or `workdir`, which must
    exist and be empty) and measure it. About 1-2 s. DeployError (one line) if the artifact cannot
    be deployed or arm-none-eabi-gcc / newlib are missing."""
    spec = load(artifact, transform)
    require(ARM_CC)
    if workdir is not None:
        write_library(spec, Path(workdir), Path(artifact).name)
        return measure_folder(Path(workdir), spec)
    with tempfile.TemporaryDirectory(prefix="kws-measure-") as tmp:
        write_library(spec, Path(tmp), Path(artifact).name)
        return measure_folder(Path(tmp), spec)
