"""Flash and RAM of a configuration's C library before training: `predict_flash(cfg) -> FlashReport`.

Weights are exact (search.size.size_bytes), tables exact (frontend.FrontEnd.table_bytes). Code is
a linear model of the compile-time options, and the stack the call graph of templates/kws.c
(entry + the deeper of: MFCC stage -> mel stage -> FFT, LSTM step -> matvec) with each frame
linear in its own sizes. Both calibrated on real Cortex-M4 links (arm-none-eabi-gcc 12.2 -Os,
newlib 3.3, Debian 12): `python -m search.deploy.calibrate` re-measures them and prints these constants.
Pure arithmetic (microseconds; no compiler needed).
"""

from __future__ import annotations

from search.config import Config
from search.deploy.measure import FlashReport, report
from search.deploy.spec import ModelSpec, from_config

# Measured by `python -m search.deploy.calibrate --n 48 --seed 0` (least squares over 48 linked
# configurations). CODE_BYTES: code and descriptors by option; STACK_FRAMES: each function's frame.
# Fit residuals there: code -24..+33 bytes (flash -0.30..+0.43 %), stack -17..+20 bytes.
CODE_BYTES: dict[str, float] = {
    "base": 3125.21, "fft_radix8by2": 296.36, "fft_radix8by4": 924.32, "trim": 237.21, "top_db": 129.23, "cmvn_mean": 147.22,
    "cmvn_meanvar": 186.63, "window_table": -24.38, "ptq_int8": 5.17, "qat": 76.0, "qat_po2": -13.42, "per_channel": -6.33,
    "mask": 25.91, "index": 36.2,
}  # fmt: skip
STACK_FRAMES: dict[str, dict[str, float]] = {
    "kws_classify": {"base": 40.46, "hidden": 7.98, "n_mfcc": 4.01, "cmvn_n_mfcc": 8.08, "trim": 17.16, "top_db": 5.01},
    "mfcc": {"base": 30.94, "n_mels": 4.03},
    "clamp_floor": {"base": 23.69, "n_mels": 4.07},
    "mel_energies": {"base": 31.99, "n_fft": 4.01},
    "lstm_step": {"base": 24.0, "hidden": 16.0},
    "matvec": {"base": 27.83},
    "fft": {"base": 152.0},
}


def features(spec: ModelSpec) -> dict[str, float]:
    """The compile-time options and sizes that change the library's code and stack frames."""
    fe, q = spec.front, spec.quant
    kernel = {1: "radix8by2", 2: "radix8by4", 0: "radix8"}[(fe.cfft_length.bit_length() - 1) % 3]  # CMSIS's kernel for this length
    return {
        "base": 1.0,
        f"fft_{kernel}": 1.0,
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
    fft = frames["fft"]
    paths = [frames["mfcc"] + frames["mel_energies"] + fft, frames["lstm_step"] + frames["matvec"]]
    if x["top_db"]:
        paths.append(frames["clamp_floor"] + frames["mel_energies"] + fft)
    return frames["kws_classify"] + max(paths)


def predict_spec(spec: ModelSpec) -> FlashReport:
    x = features(spec)
    stack = stack_bytes({name: linear(c, x) for name, c in STACK_FRAMES.items()}, x)
    return report(sum(spec.tensor_bytes.values()), spec.front.table_bytes(), round(linear(CODE_BYTES, x)), 0, round(stack))


def predict_flash(cfg: Config) -> FlashReport:
    """Predicted FlashReport of `cfg`'s library: weights and tables exact, code and stack from the
    calibrated models (flash within 2 % of the linked size over the calibration spread; see
    docs/deploy.md). DeployError for a front end the library cannot build (n_fft not a power of two)."""
    return predict_spec(from_config(cfg))
