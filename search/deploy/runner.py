"""Run a generated library's test programs: the host build over wav files, the Cortex-M4 build
under QEMU over its compiled-in clips. Both print one line per clip: name, prediction, logits."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fsdd.errors import DeployError
from search.deploy.toolchain import ARM_CC, QEMU, make, require


@dataclass(frozen=True)
class ClipResult:
    """One classified clip: its name, the predicted class and the ten float32 logits (exact)."""

    name: str
    pred: int
    logits: tuple[float, ...]


@dataclass(frozen=True)
class DeviceRun:
    results: tuple[ClipResult, ...]
    stack_bytes: int  # deepest stack of kws_classify over the clips, by stack painting
    ticks: tuple[int, ...]  # 25 MHz timer ticks per clip; x 40 = instructions under -icount shift=0
    output: str


def _parse(lines: Sequence[str]) -> list[ClipResult]:
    # "NAME PRED L0 .. L9", split from the right: a clip's name may hold spaces.
    out = []
    for line in lines:
        parts = line.rsplit(None, 11)
        if len(parts) != 12 or not parts[1].lstrip("-").isdigit() or not all(len(x) == 8 for x in parts[2:]):
            continue
        try:
            logits = tuple(struct.unpack("<f", struct.pack("<I", int(x, 16)))[0] for x in parts[2:])
        except ValueError:
            continue
        out.append(ClipResult(parts[0], int(parts[1]), logits))
    return out


def run_host(folder: Path, wavs: Sequence[Path], timeout: float = 600) -> list[ClipResult]:
    """Build (plain `make`) and run build/kws_host over `wavs`; one result per wav, in order.

    The host program reads 16-bit PCM wavs (any channel count, mixed down as fsdd.audio.read_wav
    mixes them) with fsdd.audio.wav_layout's rules; give it others converted (clips.host_inputs).
    DeployError with its first error line (`error: FILE: reason`, read_wav's reason) if it refuses one."""
    require("cc")
    make(folder, timeout=timeout)
    results: list[ClipResult] = []
    for i in range(0, len(wavs), 500):  # keep command lines short
        chunk = [str(w) for w in wavs[i : i + 500]]
        r = subprocess.run([str(folder / "build" / "kws_host"), *chunk], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise DeployError(f"{folder}/build/kws_host failed: {(r.stderr.strip().splitlines() or ['?'])[0]}")
        results += _parse(r.stdout.splitlines())
    if len(results) != len(wavs):
        raise DeployError(f"{folder}/build/kws_host printed {len(results)} results for {len(wavs)} wavs")
    return results


def run_device(folder: Path, qemu_flags: str = "", timeout: float = 600) -> DeviceRun:
    """`make qemu`: build the Cortex-M4 image and run it under QEMU; its results and stack figure."""
    require(ARM_CC, QEMU)
    out = make(folder, "qemu", timeout=timeout, variables={"QEMU_FLAGS": qemu_flags} if qemu_flags else None)
    lines = out.splitlines()
    stack = [int(ln.split()[1]) for ln in lines if ln.startswith("stack ")]
    if not stack:
        raise DeployError(f"the QEMU run in {folder} did not finish (no stack line in its output)")
    ticks = tuple(int(ln.split()[2]) for ln in lines if ln.startswith("ticks "))
    return DeviceRun(tuple(_parse(lines)), stack[-1], ticks, out)
