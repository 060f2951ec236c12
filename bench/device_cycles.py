"""Instructions per one-second clip on an emulated Cortex-M4, next to the MACs the model needs.

    python bench/device_cycles.py [--artifact A.safetensors ...] [--transform auto|fft|dft]

Deploys each model (by default a few sizes and modes with random weights: the instruction count
does not depend on the weights' values, the small ones with each transform, CMSIS-DSP's FFT and
kws.c's direct DFT; or the given artifacts, with --transform), compiles one second of real
speech into the device test program (FSDD clips of the first speakers, back to back, cut to
8,000 samples; FSDD_DIR must be set), and runs it under QEMU 7.2 (`-M mps2-an386 -icount
shift=0`): with icount at shift 0 QEMU advances its virtual clock by 1 ns per executed
instruction, and the board's CMSDK timer 0 counts at 25 MHz, so instructions = 40 x timer ticks
(to within 40). MACs are counted from the model's shapes (see `macs`). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from fsdd.audio import list_wavs, trim_silence
from search.deploy.check import INSTRUCTIONS_PER_TICK
from search.deploy.clips import pcm16
from search.deploy.library import write_library
from search.deploy.measure import measure_folder
from search.deploy.runner import run_device
from search.deploy.spec import ModelSpec, load
from search.deploy.synthetic import random_artifact
from search.schema import Config, from_dict

SAMPLES = 8000  # one second at 8 kHz
SMALL = {"n_fft": 256, "hop_length": 128, "n_mels": 20, "n_mfcc": 10}
TINY = {"n_fft": 128, "hop_length": 64, "n_mels": 16, "n_mfcc": 8, "trim_db": None, "top_db": None}
MODELS: dict[str, dict] = {
    "tiny qat2-po2 h4 (n_fft 128, 16 mels, 8 MFCC, hop 64, no trim, no top_db)": {
        "model": {"hidden_size": 4}, "features": TINY, "quant": {"mode": "qat", "bits": 2, "scale": "po2"},
    },
    "small qat4-po2 h8 (n_fft 256, 20 mels, 10 MFCC, hop 128)": {"model": {"hidden_size": 8}, "features": SMALL},
    "small + meanvar CMVN": {"model": {"hidden_size": 8}, "features": SMALL | {"cmvn": "meanvar"}},
    "qat4-po2 h16 (n_fft 256, 20 mels, 13 MFCC, hop 200)": {
        "model": {"hidden_size": 16}, "features": SMALL | {"n_mfcc": 13, "hop_length": 200},
    },
    "qat4-float per-channel h32 (n_fft 512, 40 mels, 13 MFCC, hop 200)": {
        "model": {"hidden_size": 32}, "features": {"n_fft": 512, "hop_length": 200, "n_mels": 40, "n_mfcc": 13},
        "quant": {"mode": "qat", "bits": 4, "scale": "float", "per_channel": True},
    },
    "ptq_int8 h32 pruned 75 % (n_fft 512, 40 mels, 13 MFCC, hop 200)": {
        "model": {"hidden_size": 32}, "features": {"n_fft": 512, "hop_length": 200, "n_mels": 40, "n_mfcc": 13},
        "quant": {"mode": "ptq_int8"}, "prune": {"schedule": [[0, 0.5], [1, 0.5]]},
    },
    "fp32 h64 (n_fft 512, 40 mels, 13 MFCC, hop 200)": {
        "model": {"hidden_size": 64}, "features": {"n_fft": 512, "hop_length": 200, "n_mels": 40, "n_mfcc": 13},
        "quant": {"mode": "fp32"},
    },
}  # fmt: skip
BOTH = 2  # the first models run with each transform; the larger ones with auto's (the FFT)


def one_second(data_dir: Path) -> np.ndarray:
    """8,000 int16 samples of speech: trimmed FSDD clips (sorted by name) back to back."""
    parts, total = [], 0
    for wav in list_wavs(data_dir):
        x = pcm16(wav)
        x = (trim_silence(x.astype(np.float32) / 32768.0, 40.0) * 32768.0).astype(np.int16)
        parts.append(x)
        total += len(x)
        if total >= SAMPLES:
            break
    return np.concatenate(parts)[:SAMPLES]


def frames_of(spec: ModelSpec, pcm: np.ndarray) -> int:
    """Frames the library computes for this clip (docs/artifact.md section 4, steps 2-4)."""
    fe = spec.front
    x = pcm.astype(np.float32) / 32768.0
    if fe.trim_ratio is not None:
        x = trim_silence(x, -10.0 * math.log10(fe.trim_ratio))
    return 1 + max(len(x), fe.n_fft) // fe.hop_length


def macs(spec: ModelSpec, frames: int) -> dict[str, int]:
    """Multiply-accumulates of one clip, from the shapes. Front end per frame and pass: the window
    (n_fft), the n_fft/2-point complex FFT (2 M log2 M real multiplies for M points), the real-FFT
    split (n_fft), the power and mel weights (2 each per bin); the DCT (n_mels x n_mfcc) in the
    passes that need MFCCs. With the direct DFT: per bin a filter uses, 2 (N/2 - 1) multiplies over
    the folded frame, then the power and the weights. The library makes up to 3 passes (top_db clamp, CMVN statistics, the
    LSTM's); `front_single_pass` is what a front end that stores its frames would need. LSTM per
    step: the kept weights of W_ih and W_hh plus 3h element-wise products; the Linear layer once."""
    fe = spec.front
    n, m, bins = fe.n_fft, fe.n_fft // 2, fe.n_fft // 2 + 1
    if fe.transform == "dft":  # window; per bin that some filter uses: (N/2 - 1) x 2 on the folded frame, power and weights
        pts = fe.tables()["kws_t_mel_pts"]
        hz = np.arange(bins, dtype=np.float32) * np.float32(fe.bin_hz)
        used = int(np.sum((hz >= pts[0]) & (hz < pts[-1])))
        spectrum = n + used * (2 * (m - 1) + 4)
    else:
        spectrum = n + 2 * m * int(math.log2(m)) + n + 4 * bins
    dct = fe.n_mels * fe.n_mfcc
    spectrum_passes = 1 + (fe.top_db is not None) + (fe.cmvn != "none")
    dct_passes = 1 + (fe.cmvn != "none")
    nnz = {mat.name: mat.nnz for mat in spec.matrices}
    h = spec.hidden
    return {
        "front": frames * (spectrum_passes * spectrum + dct_passes * dct),
        "front_single_pass": frames * (spectrum + dct),
        "lstm": frames * (nnz["lstm.weight_ih"] + nnz["lstm.weight_hh"] + 3 * h) + nnz["fc.weight"],
        "exp_calls": frames * 5 * h,
    }


def bench(name: str, artifact: Path, pcm: np.ndarray, workdir: Path, transform: str = "auto") -> dict:
    spec = load(artifact, transform)
    lib = workdir / "lib"
    lib.mkdir()
    write_library(spec, lib, artifact.name, clips=[("one_second", pcm)])
    run = run_device(lib, "-icount shift=0")
    flash = measure_folder(lib, spec)
    frames = frames_of(spec, pcm)
    instructions = INSTRUCTIONS_PER_TICK * run.ticks[0]
    count = macs(spec, frames)
    return {
        "model": name,
        "transform": spec.front.transform,
        "frames": frames,
        "instructions": instructions,
        "instructions_per_frame": round(instructions / frames),
        "macs_front": count["front"],
        "macs_front_single_pass": count["front_single_pass"],
        "macs_lstm": count["lstm"],
        "exp_calls": count["exp_calls"],
        "instructions_per_mac": round(instructions / (count["front"] + count["lstm"]), 2),
        "flash_bytes": flash.flash_bytes,
        "weights_bytes": flash.weights_bytes,
        "tables_bytes": flash.tables_bytes,
        "code_bytes": flash.code_bytes,
        "ram_bytes": flash.ram_bytes,
        "stack_painted_bytes": run.stack_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", nargs="*", type=Path, default=[], help="trained artifacts to bench instead of the default models")
    p.add_argument("--transform", choices=("auto", "fft", "dft"), default="auto", help="for --artifact (default: auto's)")
    args = p.parse_args(argv)
    data = os.environ.get("FSDD_DIR")
    if not data:
        print("error: set FSDD_DIR to the FSDD recordings folder", file=sys.stderr)
        return 2
    pcm = one_second(Path(data))
    results = []
    with tempfile.TemporaryDirectory(prefix="kws-bench-") as tmp:
        jobs: list[tuple[str, Path, str]] = [(a.name, a, args.transform) for a in args.artifact]
        if not jobs:
            for i, (name, raw) in enumerate(MODELS.items()):
                cfg: Config = from_dict({"quant": {"mode": "qat", "bits": 4, "scale": "po2"}, "train": {"epochs": 5}} | raw)
                path = random_artifact(cfg, Path(tmp) / f"m{i}.safetensors", seed=i)
                jobs += [(name, path, t) for t in (("fft", "dft") if i < BOTH else ("auto",))]
        for i, (name, artifact, transform) in enumerate(jobs):
            work = Path(tmp) / f"w{i}"
            work.mkdir()
            results.append(bench(name, artifact, pcm, work, transform))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({
        "counter": "QEMU -M mps2-an386 -icount shift=0; instructions = 40 x CMSDK timer ticks (25 MHz), +-40",
        "clip": f"{SAMPLES} samples (1 s) of FSDD speech",
        "models": results,
    }, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
