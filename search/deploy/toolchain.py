"""The tools a deployment needs (cc, make, arm-none-eabi-gcc with newlib, qemu-system-arm), and
running the generated Makefile: a missing tool or a failed build is one DeployError line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from fsdd.errors import DeployError

ARM_CC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"
PACKAGES = {"cc": "gcc", "make": "make", ARM_CC: "gcc-arm-none-eabi", QEMU: "qemu-system-arm"}
DEVICE_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"


def missing(tool: str) -> str | None:
    """Why `tool` cannot be used (one line naming the Debian package to install), or None."""
    if shutil.which(tool) is None:
        return f"{tool} not found: install the Debian package {PACKAGES[tool]}"
    if tool == ARM_CC:
        libc = subprocess.run([ARM_CC, "-print-file-name=libc.a"], capture_output=True, text=True).stdout.strip()
        if not Path(libc).is_file():
            return f"newlib for {ARM_CC} not found: install the Debian package libnewlib-arm-none-eabi"
    return None


def require(*tools: str) -> None:
    for tool in tools:
        problem = missing(tool)
        if problem:
            raise DeployError(problem)


def device_tools_missing() -> str | None:
    """None when the Cortex-M4 build and QEMU can run; else the first problem, one line."""
    return next((p for p in (missing(ARM_CC), missing(QEMU)) if p), None)


def make(folder: Path, *targets: str, timeout: float = 600, variables: dict[str, str] | None = None) -> str:
    """Run `make -s TARGETS` in `folder`; its stdout. DeployError with make's last error line on failure."""
    require("make")
    cmd = ["make", "-s", "-C", str(folder), *targets, *(f"{k}={v}" for k, v in (variables or {}).items())]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DeployError(f"make {' '.join(targets)} in {folder} took longer than {timeout:.0f} s") from None
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("make")]
        errors = [ln for ln in lines if "error" in ln.lower()]
        detail = (errors or lines or [f"exit status {r.returncode}"])[0].strip()
        raise DeployError(f"make {' '.join(targets)} failed in {folder}: {detail}")
    return r.stdout
