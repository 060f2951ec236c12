"""Audio perturbations that make a clip sound like another speaker, microphone and room: speed,
vocal-tract-length perturbation, pitch shift, simulated room reverberation, band-limiting and
equalisation, coloured noise; and `rerecord`, the random chain of them that one cached training
variant of a clip draws (fsdd.augment.Variant.chain)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import scipy.signal as sps
import torch
import torchaudio

from fsdd.files import atomic_write

RIRS = 200  # simulated rooms in the bank a chain draws from
RIR_SEED = 7
RIR_SECONDS = 0.8  # each impulse response cut to this length (RT60 <= 0.7 s)
CHAIN_VERSION = 1  # part of a chain variant's cache key: bump when `rerecord` changes


def speed(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """The clip played `factor` times faster (torchaudio's band-limited resampling), which moves
    pitch and formants like another vocal tract (Ko et al., 2015)."""
    if factor == 1.0:
        return x
    orig = round(sample_rate * factor)
    g = math.gcd(orig, sample_rate)
    return torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(x, np.float32)), orig // g, sample_rate // g).numpy()


def pitch_shift(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Pitch and formants moved by `factor` (rounded to hundredths) without changing the duration:
    `speed` by `factor`, then torchaudio's phase vocoder stretches it back to the clip's length.
    (torchaudio.functional.pitch_shift resamples by exact semitone ratios, which took about 1 s a clip here.)"""
    factor = round(factor, 2)
    if factor == 1.0:
        return x
    y = torch.from_numpy(speed(x, factor, sample_rate).astype(np.float32))
    n_fft, hop = 256, 64
    window = torch.hann_window(n_fft)
    spec = torch.stft(y, n_fft, hop, window=window, return_complex=True)
    advance = torch.linspace(0, math.pi * hop, spec.shape[0])[..., None]
    stretched = torchaudio.functional.phase_vocoder(spec, 1.0 / factor, advance)
    return torch.istft(stretched, n_fft, hop, window=window, length=len(x)).numpy().astype(np.float32)


def vtlp_filterbank(fb: torch.Tensor, alpha: float, sample_rate: int, f_hi: float = 3200.0) -> torch.Tensor:
    """A mel filterbank `fb` (n_freqs, n_mels) evaluated at frequencies warped by vocal-tract-length
    perturbation (Jaitly & Hinton, 2013: piecewise linear, w(f) = alpha f up to a knee, then a line
    to the Nyquist frequency): alpha > 1 moves the formants up, as a shorter vocal tract does."""
    if alpha == 1.0:
        return fb
    nyquist = sample_rate / 2
    freqs = np.linspace(0, nyquist, fb.shape[0])
    knee = f_hi * min(alpha, 1.0) / alpha
    warped = np.where(freqs <= knee, alpha * freqs, nyquist - (nyquist - alpha * knee) / (nyquist - knee) * (nyquist - freqs))
    cols = [np.interp(warped, freqs, fb[:, j].double().numpy()) for j in range(fb.shape[1])]
    return torch.from_numpy(np.stack(cols, 1)).float()


def rir_bank(cache_dir: Path, sample_rate: int) -> list[np.ndarray]:
    """RIRS simulated room impulse responses (pyroomacoustics ShoeBox, the image method): rooms
    3-10 x 3-8 x 2.4-4 m, RT60 0.15-0.7 s (Sabine), microphone and talker 0.3-2.5 m apart; each
    peak-normalised. Drawn from RIR_SEED and cached in `cache_dir`/rooms/ (a file that cannot be
    read is made again)."""
    path = Path(cache_dir) / "rooms" / f"rirs-{RIRS}-{RIR_SEED}-{sample_rate}.npz"
    try:
        with np.load(path) as z:
            return [z[f"r{i}"] for i in range(RIRS)]
    except (OSError, KeyError, ValueError):
        pass
    rng = np.random.default_rng(RIR_SEED)
    out: list[np.ndarray] = []
    while len(out) < RIRS:
        dims = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.4, 4)])
        try:
            absorption, max_order = pra.inverse_sabine(rng.uniform(0.15, 0.7), dims)
        except ValueError:  # an RT60 this room cannot have
            continue
        room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=min(max_order, 20))
        mic = np.array([rng.uniform(0.5, dims[0] - 0.5), rng.uniform(0.5, dims[1] - 0.5), rng.uniform(0.7, 1.8)])
        distance = rng.uniform(0.3, 2.5)
        for _ in range(20):  # a talker at that distance, roughly level with the microphone, inside the room
            d = rng.normal(size=3)
            d[2] *= 0.2
            src = mic + distance * d / np.linalg.norm(d)
            if np.all(src > 0.3) and np.all(src < dims - 0.3):
                break
        else:
            continue
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        r = np.asarray(room.rir[0][0], dtype=np.float32)[: int(sample_rate * RIR_SECONDS)]
        out.append(r / np.abs(r).max())
    atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **{f"r{i}": r for i, r in enumerate(out)}))  # noqa: SIM115
    return out


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def room(x: np.ndarray, rir: np.ndarray, sample_rate: int) -> np.ndarray:
    """The clip as heard through a room (convolved with `rir`, its tail kept up to 0.3 s), at its own level."""
    y = sps.fftconvolve(x, rir)[: len(x) + int(0.3 * sample_rate)]
    return (y * _rms(x) / _rms(y)).astype(np.float32)


def colour(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Another microphone and channel: a Butterworth high-pass at 80-400 Hz (p 0.7), a low-pass at
    2-3.8 kHz (p 0.7), and a smooth random equaliser (a tilt of up to +-6 dB and three random
    cosines of up to +-3 dB, as a linear-phase FIR, scipy.signal.firwin2), at the clip's own level."""
    y = x.astype(np.float64)
    if rng.random() < 0.7:
        y = sps.sosfilt(sps.butter(int(rng.integers(1, 5)), rng.uniform(80, 400), "highpass", fs=sample_rate, output="sos"), y)
    if rng.random() < 0.7:
        y = sps.sosfilt(sps.butter(int(rng.integers(2, 7)), rng.uniform(2000, 3800), "lowpass", fs=sample_rate, output="sos"), y)
    f = np.linspace(0, 1, 65)
    db = rng.uniform(-6, 6) * (f - 0.5)
    for _ in range(3):
        db += rng.uniform(-3, 3) * np.cos(np.pi * f * rng.uniform(1, 6) + rng.uniform(0, 2 * np.pi))
    y = np.convolve(y, sps.firwin2(129, f, 10 ** (db / 20)), mode="same")
    return (y * _rms(x) / max(_rms(y), 1e-12)).astype(np.float32)


def noise(x: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float] = (5.0, 30.0)) -> np.ndarray:
    """White, pink-ish or brown-ish noise (one-pole low-pass of white noise) at a random SNR in dB
    over the clip's mean power (silence included)."""
    n = rng.standard_normal(len(x) + 2)
    kind = int(rng.integers(3))
    if kind:
        n = sps.lfilter([1.0], [1.0, -(0.9, 0.98)[kind - 1]], n)
    n = n[: len(x)]
    return (x + n / _rms(n) * _rms(x) / 10 ** (rng.uniform(*snr_db) / 20)).astype(np.float32)


def chain_seed(name: str, index: int) -> int:
    """The seed of chain `index` of the clip `name`: the same clip gets the same variant on every run and machine."""
    return int.from_bytes(hashlib.sha256(f"{name}|chain|{index}|{CHAIN_VERSION}".encode()).digest()[:8], "little")


def rerecord(x: np.ndarray, name: str, index: int, sample_rate: int, rirs: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Chain `index` of the clip `name`: another speaker, microphone and room, each step drawn with
    its probability from the clip's own seed (chain_seed): speed 0.85-1.15 (p 0.5), a VTLP warp
    0.85-1.15 (p 0.8; returned, for the front end's filterbank), pitch and formants moved by -3..+3
    semitones (p 0.4), a simulated room (p 0.6), microphone colouring (p 0.8), coloured noise at
    5-30 dB SNR (p 0.9). Returns (samples, VTLP alpha). The recipe measured best on synthetic
    voices (docs/results.md)."""
    rng = np.random.default_rng(chain_seed(name, index))
    alpha = 1.0
    if rng.random() < 0.5:
        x = speed(x, round(rng.uniform(0.85, 1.15), 2), sample_rate)
    if rng.random() < 0.8:
        alpha = round(rng.uniform(0.85, 1.15), 2)
    if rng.random() < 0.4:
        x = pitch_shift(x, 2 ** (rng.uniform(-3, 3) / 12), sample_rate)
    if rng.random() < 0.6:
        x = room(x, rirs[int(rng.integers(len(rirs)))], sample_rate)
    if rng.random() < 0.8:
        x = colour(x, rng, sample_rate)
    if rng.random() < 0.9:
        x = noise(x, rng)
    return x, alpha
