"""Command line: `python -m search.deploy ARTIFACT --out DIR [--force] [--check] [--device] [--measure]`.

Writes the C library of ARTIFACT into DIR (docs/deploy.md). --check builds the host program and
compares it with the numpy reference on every clip of the artifact's split; --device builds the
Cortex-M4 image and runs it under QEMU against the host build; --measure links it for the
Cortex-M4 and reports flash and RAM. Prints one JSON line last; errors are one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fsdd.corpora import parse_data_dir
from fsdd.errors import ArgumentParser, DeployError, path_arg, run_cli
from search.deploy.build import deploy
from search.deploy.check import check_device, check_host, torch_predictions
from search.deploy.clips import split_clips
from search.deploy.measure import measure_folder
from search.deploy.toolchain import ARM_CC, QEMU, require


def run(args: argparse.Namespace) -> dict:
    if args.device:
        require(ARM_CC, QEMU)  # before writing anything
    if args.measure:
        require(ARM_CC)
    if args.check:
        torch_predictions(args.artifact)  # a bad predictions file is refused before anything is written
    dep = deploy(args.artifact, args.out, force=args.force, data_dir=args.data_dir, device_clips=args.clips, transform=args.transform)
    result: dict = {"out": str(dep.out), "size_bytes": sum(dep.spec.tensor_bytes.values()), "device_clips": len(dep.device_clips)}
    if dep.note:
        print(f"note: {dep.note}", file=sys.stderr)
    if args.check:
        result["host"] = check_host(args.artifact, dep.out, args.data_dir).to_dict()
    if args.device:
        if not dep.device_clips:
            raise DeployError("--device needs the artifact's test clips: set FSDD_DIR or pass --data-dir")
        result["device"] = check_device(dep.out, split_clips(dep.meta, args.data_dir), args.count).to_dict()
    if args.measure:
        result["flash"] = measure_folder(dep.out, dep.spec).to_dict()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    p = ArgumentParser(prog="python -m search.deploy", description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=path_arg, help="an fsdd-lstm .safetensors artifact")
    p.add_argument("--out", type=path_arg, required=True, help="folder for the library (must not exist, or be empty)")
    p.add_argument("--force", action="store_true", help="replace the contents of a non-empty --out")
    p.add_argument(
        "--data-dir",
        action="append",
        type=parse_data_dir,
        metavar="[NAME=]PATH",
        help="recordings folder (default: $FSDD_DIR, else the download cache); once per corpus of a several-corpora artifact",
    )
    p.add_argument("--clips", type=int, default=10, help="test clips compiled into the device program (default 10)")
    p.add_argument(
        "--transform", choices=("auto", "fft", "dft"), default="auto",
        help="the spectrum: CMSIS-DSP's FFT, or the direct DFT (smaller, slower); auto: the DFT up to n_fft 128",
    )  # fmt: skip
    p.add_argument("--check", action="store_true", help="host build against the numpy reference on the split's clips")
    p.add_argument("--device", action="store_true", help="Cortex-M4 build under QEMU against the host build")
    p.add_argument("--count", action="store_true", help="with --device: count instructions per clip (QEMU -icount)")
    p.add_argument("--measure", action="store_true", help="flash and RAM of the library on a Cortex-M4")
    args = p.parse_args(argv)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
