"""Re-measure the flash predictor's constants: `python -m search.deploy.calibrate [--n 48] [--seed 0]`.

Links the libraries of a spread of configurations (random weights; every mode, bit width, scale,
pruning encoding, FFT length, transform (FFT or DFT), front-end option and a range of sizes) for
the Cortex-M4, fits predict.CODE_BYTES and predict.STACK_FRAMES by least squares, and prints
them as Python to paste into search/deploy/predict.py, with the fit's residuals. About 0.6 s per
configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from search.deploy.library import write_library
from search.deploy.measure import FlashReport, measure_folder
from search.deploy.predict import features, linear, stack_bytes
from search.deploy.spec import load
from search.deploy.stack import frames
from search.deploy.synthetic import random_artifact
from search.schema import Config, from_dict

CODE_KEYS = (
    "base",
    "dft",
    "fft_radix8by2",
    "fft_radix8by4",
    "trim",
    "top_db",
    "cmvn_mean",
    "cmvn_meanvar",
    "window_table",
    "ptq_int8",
    "qat",
    "qat_po2",
    "per_channel",
    "mask",
    "index",
)
# Each function of kws.c's call graph: the sizes its frame depends on ("fft": CMSIS's radix-8 kernel).
FRAME_KEYS = {
    "kws_classify": ("base", "hidden", "n_mfcc", "cmvn_n_mfcc", "trim", "top_db"),
    "mfcc": ("base", "n_mels"),
    "clamp_floor": ("base", "n_mels"),
    "mel_energies": ("base", "n_fft", "dft"),
    "lstm_step": ("base", "hidden"),
    "matvec": ("base",),
    "fft": ("base",),
}
PRUNE = {"none": [], "half": [[0, 0.5]], "sparse": [[0, 0.9]], "mixed": [[0, 0.7], [1, 0.5]]}


def config(mode: dict, prune: str, features_: dict, hidden: int) -> Config:
    return from_dict(
        {
            "model": {"hidden_size": hidden},
            "features": features_,
            "quant": mode,
            "prune": {"schedule": PRUNE[prune]},
            "train": {"epochs": 5},
        }
    )


CORNERS = 19  # fixed configurations at the head of spread(): the rest are random


def spread(n: int, seed: int) -> list[tuple[Config, str]]:
    """(configuration, transform): the one-at-a-time corners around a small base model (each
    transform at n_fft 128, 256 and 512), then random configurations."""
    rng = np.random.default_rng(seed)
    base_f = {"n_fft": 256, "hop_length": 128, "n_mels": 20, "n_mfcc": 10}
    qat4 = {"mode": "qat", "bits": 4, "scale": "po2"}
    out = [(config(qat4, "none", base_f, 8), "auto")]
    for mode in (
        {"mode": "fp32"},
        {"mode": "ptq_int8"},
        {"mode": "qat", "bits": 4, "scale": "float"},
        {**qat4, "per_channel": True},
        {"mode": "qat", "bits": 4, "scale": "float", "per_channel": True},
    ):
        out.append((config(mode, "none", base_f, 8), "auto"))
    for prune in ("half", "sparse"):
        out.append((config(qat4, prune, base_f, 8), "auto"))
    for change, transform in (
        ({"trim_db": None}, "auto"),
        ({"top_db": None}, "auto"),
        ({"cmvn": "mean"}, "auto"),
        ({"cmvn": "meanvar"}, "auto"),
        ({"win_length": 200}, "auto"),
        ({"n_fft": 512, "hop_length": 256}, "auto"),
        ({"n_fft": 128, "hop_length": 64}, "auto"),
        ({"n_fft": 128, "hop_length": 64}, "fft"),
        ({}, "dft"),
        ({"win_length": 200}, "dft"),
        ({"n_fft": 512, "hop_length": 256}, "dft"),
    ):
        out.append((config(qat4, "none", base_f | change, 8), transform))
    assert len(out) == CORNERS
    modes = [{"mode": "fp32"}, {"mode": "ptq_int8"}] + [
        {"mode": "qat", "bits": b, "scale": s, "per_channel": pc} for b in range(2, 9) for s in ("float", "po2") for pc in (False, True)
    ]
    while len(out) < n:
        n_fft = int(rng.choice([128, 256, 256, 512, 512, 1024]))
        n_mels = int(rng.integers(10, 41))
        f = {
            "n_fft": n_fft,
            "hop_length": int(rng.choice([n_fft // 4, n_fft // 2, 200 if n_fft >= 256 else 64])),
            "n_mels": n_mels,
            "n_mfcc": int(rng.integers(5, min(n_mels, 20) + 1)),
            "cmvn": str(rng.choice(["none", "mean", "meanvar"])),
            "top_db": None if rng.random() < 0.25 else 80.0,
            "trim_db": None if rng.random() < 0.25 else 40.0,
            "win_length": None if rng.random() < 0.8 else n_fft * 3 // 4,
        }
        f["hop_length"] = min(f["hop_length"], f["win_length"] or n_fft)  # the config refuses a hop longer than the window
        hidden = int(rng.choice([4, 8, 12, 16, 24, 32, 48, 64]))
        cfg = config(modes[int(rng.integers(len(modes)))], str(rng.choice(list(PRUNE))), f, hidden)
        out.append((cfg, str(rng.choice(["auto", "auto", "fft", "dft"]))))
    return out


def measure_config(cfg: Config, seed: int = 0, transform: str = "auto") -> tuple[dict[str, float], FlashReport, dict[str, int]]:
    """Features, measured FlashReport and stack frames (by function) of one configuration's library."""
    with tempfile.TemporaryDirectory(prefix="kws-cal-") as tmp:
        path = random_artifact(cfg, Path(tmp) / "m.safetensors", seed=seed)
        spec = load(path, transform)
        lib = Path(tmp) / "lib"
        lib.mkdir()
        write_library(spec, lib, path.name)
        got = measure_folder(lib, spec)
        fr = frames(sorted((lib / "build" / "arm").glob("*.ci")))
        if "arm_radix8_butterfly_f32" in fr:
            fr["fft"] = fr["arm_radix8_butterfly_f32"]
        return features(spec), got, fr


def fit(rows: list[dict[str, float]], y: list[int], keys: tuple[str, ...]) -> dict[str, float]:
    a = np.array([[r.get(k, 0.0) for k in keys] for r in rows])
    coef, *_ = np.linalg.lstsq(a, np.array(y, dtype=float), rcond=None)
    return {k: round(float(c), 2) for k, c in zip(keys, coef, strict=True)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.deploy.calibrate", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=48, help=f"configurations (the first {CORNERS} are fixed corners)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows, reports, frame_rows = [], [], []
    for i, (cfg, transform) in enumerate(spread(args.n, args.seed)):
        x, r, fr = measure_config(cfg, transform=transform)
        rows.append(x)
        reports.append(r)
        frame_rows.append(fr)
        print(f"{i + 1}/{args.n} code {r.code_bytes} stack {r.stack_bytes} flash {r.flash_bytes}", file=sys.stderr)
    code = fit(rows, [r.code_bytes for r in reports], CODE_KEYS)
    stack: dict[str, dict[str, float]] = {}
    for name, keys in FRAME_KEYS.items():
        have = [(x, fr[name]) for x, fr in zip(rows, frame_rows, strict=True) if name in fr]
        stack[name] = fit([x for x, _ in have], [f for _, f in have], keys)
    code_err = [round(linear(code, x)) - r.code_bytes for x, r in zip(rows, reports, strict=True)]
    stack_err = [
        round(stack_bytes({n: linear(c, x) for n, c in stack.items()}, x)) - r.stack_bytes for x, r in zip(rows, reports, strict=True)
    ]
    flash_rel = [e / r.flash_bytes for e, r in zip(code_err, reports, strict=True)]
    print(f"CODE_BYTES: dict[str, float] = {code!r}")
    print(f"STACK_FRAMES: dict[str, dict[str, float]] = {stack!r}")
    print(
        json.dumps(
            {
                "configs": len(rows),
                "code_error_bytes": [min(code_err), max(code_err)],
                "flash_error_rel": [round(min(flash_rel), 5), round(max(flash_rel), 5)],
                "stack_error_bytes": [min(stack_err), max(stack_err)],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
