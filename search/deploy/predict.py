"""Flash and RAM of a configuration's C library before training: `predict_flash(cfg) -> FlashReport`.

Weights are exact (search.size.size_bytes), tables exact (frontend.FrontEnd.table_bytes). Code is
a linear model of the compile-time options (the transform among them), and the stack the call
graph of templates/kws.c (entry + the deeper of: MFCC stage -> mel stage -> FFT (none with the
DFT), LSTM step -> matvec) with each frame linear in its own sizes. Both calibrated on real
Cortex-M4 links (arm-none-eabi-gcc 12.2 -Os, newlib 3.3, Debian 12): `python -m
search.deploy.calibrate` re-measures them and prints these constants. Pure arithmetic
(microseconds; no compiler needed).
"""

from __future__ import annotations

from search.deploy.measure import FlashReport, report
from search.deploy.spec import ModelSpec, from_config
from search.schema import Config

# Measured by `python -m search.deploy.calibrate --n 48 --seed 0` (least squares over 48 linked
# configurations). CODE_BYTES: code and descriptors by option; STACK_FRAMES: each function's frame.
# Fit residuals there: code -28..+43 bytes (flash -0.51..+1.31 %: the DFT's libraries are small), stack -19..+17 bytes.
CODE_BYTES: dict[str, float] = {
    "base": 3171.13, "dft": -1374.54, "fft_radix8by2": 284.43, "fft_radix8by4": 907.46, "trim": 243.58, "top_db": 99.08,
    "cmvn_mean": 149.47, "cmvn_meanvar": 183.98, "window_table": -19.08, "ptq_int8": -2.41, "qat": 54.78, "qat_po2": -0.2,
    "per_channel": -16.62, "mask": 32.04, "index": 37.58,
}  # fmt: skip
STACK_FRAMES: dict[str, dict[str, float]] = {
    "kws_classify": {"base": 39.89, "hidden": 7.93, "n_mfcc": 4.31, "cmvn_n_mfcc": 8.05, "trim": 17.5, "top_db": 1.13},
    "mfcc": {"base": 32.91, "n_mels": 3.9},
    "clamp_floor": {"base": 25.44, "n_mels": 3.9},
    "mel_energies": {"base": 33.33, "n_fft": 4.01, "dft": -1.51},
    "lstm_step": {"base": 24.0, "hidden": 16.0},
    "matvec": {"base": 27.92},
    "fft": {"base": 152.0},
}


def features(spec: ModelSpec) -> dict[str, float]:
    """The compile-time options and sizes that change the library's code and stack frames."""
    fe, q = spec.front, spec.quant
    kernel = {1: "radix8by2", 2: "radix8by4", 0: "radix8"}[(fe.cfft_length.bit_length() - 1) % 3]  # CMSIS's kernel for this length
    dft = fe.transform == "dft"
    return {
        "base": 1.0,
        "dft" if dft else f"fft_{kernel}": 1.0,
        "trim": float(fe.trim_ratio is not None),
        "top_db": float(fe.top_db is not None),
        "cmvn_mean": float(fe.cmvn == "mean"),
        "cmvn_meanvar": float(fe.cmvn == "meanvar"),
        "window_table": float(fe.win_length != fe.n_fft),
        "ptq_int8": float(q == "ptq_int8"),
        "qat": float(q == "qat"),
        "qat_po2": float(spec.po2),
        "per_channel": float(spec.per_channel),
        "mask": float(any(m.mask for m in spec.matrices)),
        "index": float(any(m.index for m in spec.matrices)),
        "n_fft": float(fe.n_fft),
        "hidden": float(spec.hidden),
        "n_mfcc": float(fe.n_mfcc),
        "cmvn_n_mfcc": float(fe.n_mfcc if fe.cmvn != "none" else 0),
        "n_mels": float(fe.n_mels),
    }


def linear(coefs: dict[str, float], x: dict[str, float]) -> float:
    return sum(c * x.get(k, 0.0) for k, c in coefs.items())


def stack_bytes(frames: dict[str, float], x: dict[str, float]) -> float:
    """Worst-case stack from the frames of kws.c's functions (measured or predicted)."""
    fft = 0.0 if x.get("dft") else frames["fft"]  # the DFT is inlined into mel_energies
    paths = [frames["mfcc"] + frames["mel_energies"] + fft, frames["lstm_step"] + frames["matvec"]]
    if x["top_db"]:
        paths.append(frames["clamp_floor"] + frames["mel_energies"] + fft)
    return frames["kws_classify"] + max(paths)


def predict_spec(spec: ModelSpec) -> FlashReport:
    x = features(spec)
    stack = stack_bytes({name: linear(c, x) for name, c in STACK_FRAMES.items()}, x)
    return report(sum(spec.tensor_bytes.values()), spec.front.table_bytes(), round(linear(CODE_BYTES, x)), 0, round(stack))


def predict_flash(cfg: Config, transform: str = "auto") -> FlashReport:
    """Predicted FlashReport of `cfg`'s library: weights and tables exact, code and stack from the
    calibrated models (flash within 2 % of the linked size over the calibration spread; see
    docs/deploy.md). `transform` as deploy takes it (auto: the one deploy picks). DeployError for a
    front end the library cannot build (n_fft not a power of two)."""
    return predict_spec(from_config(cfg, transform=transform))
