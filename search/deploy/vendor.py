"""Refresh the vendored CMSIS-DSP subset: `python -m search.deploy.vendor [--sdist cmsisdsp-X.tar.gz]`.

Copies the few CMSIS-DSP files the generated libraries compile (the float32 complex FFT, its
bit reversal, the headers they include) verbatim from PyPI's `cmsisdsp` source distribution
into search/deploy/cmsis/, and extracts the twiddle and bit-reversal tables of the supported FFT
lengths from arm_common_tables.c (2.9 MB, all sizes and types) into arm_fft_tables_f32.c.
Without --sdist it runs `pip download cmsisdsp==VERSION --no-binary :all: --no-deps`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from fsdd.files import sha256_file

VERSION = "1.10.3"
CMSIS_DIR = Path(__file__).resolve().parent / "cmsis"
# Complex FFT lengths whose tables are vendored: n_fft = 2 x these (64 .. 1024 samples).
CFFT_LENGTHS = (32, 64, 128, 256, 512)
FILES = (
    "LICENSE",
    "Include/arm_math_types.h",
    "Include/arm_math_memory.h",
    "Include/arm_common_tables.h",
    "Include/dsp/none.h",
    "Include/dsp/utils.h",
    "Include/dsp/transform_functions.h",
    "Include/dsp/basic_math_functions.h",
    "Include/dsp/complex_math_functions.h",
    "Include/dsp/fast_math_functions.h",
    "PrivateInclude/arm_compiler_specific.h",
    "Source/TransformFunctions/arm_cfft_f32.c",
    "Source/TransformFunctions/arm_cfft_radix8_f32.c",
    "Source/TransformFunctions/arm_bitreversal2.c",
)
TABLES = "Source/CommonTables/arm_common_tables.c"
EXTRACT = "Source/CommonTables/arm_fft_tables_f32.c"


def _table(text: str, name: str) -> str:
    """The definition `const <type> NAME[...] ... = { ... };` of one table, verbatim."""
    m = re.search(rf"^const \w+ {re.escape(name)}\[[^\]]*\][^=]*=\s*\{{.*?^\}};\n", text, re.S | re.M)
    if m is None:
        raise SystemExit(f"error: {name} not found in {TABLES}")
    return m.group(0)


def extract_tables(text: str) -> str:
    header = text[: text.index("#include")]
    names = [f"twiddleCoef_{n}" for n in CFFT_LENGTHS] + [f"armBitRevIndexTable{n}" for n in CFFT_LENGTHS]
    body = "\n".join(_table(text, name) for name in names)
    note = (
        f"/* Extract of CMSIS-DSP {VERSION} {TABLES}: the definitions of {', '.join(names)},\n"
        " * copied verbatim by search/deploy/vendor.py (the full file holds every size and type, 2.9 MB). */\n"
    )
    return header + note + '#include "arm_compiler_specific.h"\n#include "arm_math_types.h"\n#include "arm_common_tables.h"\n\n' + body


def refresh(sdist: Path) -> None:
    digest = sha256_file(sdist)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdist) as tar:
        tar.extractall(tmp, filter="data")
        (root,) = Path(tmp).iterdir()
        for rel in FILES:
            dst = CMSIS_DIR / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, dst)
        dst = CMSIS_DIR / EXTRACT
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(extract_tables((root / TABLES).read_text()))
    readme = CMSIS_DIR / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    text = re.sub(r"sha256 `[0-9a-f]*`", f"sha256 `{digest}`", text)
    readme.write_text(text)
    print(f"vendored CMSIS-DSP from {sdist.name} (sha256 {digest}) into {CMSIS_DIR}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.deploy.vendor", description=__doc__.splitlines()[0])
    p.add_argument("--sdist", type=Path, help=f"cmsisdsp-{VERSION}.tar.gz (default: pip download it)")
    args = p.parse_args(argv)
    if args.sdist is not None:
        refresh(args.sdist)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"cmsisdsp=={VERSION}",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--no-build-isolation",
            "-d",
            tmp,
        ]
        subprocess.run(cmd, check=True)
        refresh(next(Path(tmp).glob("cmsisdsp-*.tar.gz")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
