"""Training-only augmentation for new voices: audio variants of each clip (speed perturbation,
additive noise, re-recordings by fsdd.perturb), computed once and cached like the features, and
SpecAugment-style time masks. What a run asks for is an fsdd.schema.AugmentConfig."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

from fsdd.perturb import CHAIN_VERSION
from fsdd.schema import AugmentConfig


def variants(aug: AugmentConfig) -> list[Variant]:
    """The cached variants of every clip besides the original, in a fixed order: every speed with
    every tempo (the original's included), a noisy copy of each of those if noise is on, then
    `aug.chains` re-recordings (fsdd.perturb.rerecord)."""
    snrs = [None] if aug.noise_snr_db is None else [None, aug.noise_snr_db]
    grid = [Variant(s, t, n) for s in (1.0, *aug.speeds) for t in (1.0, *aug.tempos) for n in snrs]
    return [v for v in grid if v != Variant()] + [Variant(chain=k) for k in range(aug.chains)]


@dataclass(frozen=True)
class Variant:
    """One variant of every clip: a speed factor, a tempo factor and an optional noise SNR; or
    `chain` k: the clip re-recorded by a random chain of its own (fsdd.perturb.rerecord)."""

    speed: float = 1.0
    tempo: float = 1.0
    snr_db: float | None = None
    chain: int | None = None

    def key(self) -> dict:
        if self.chain is not None:
            return {"chain": self.chain, "chain_version": CHAIN_VERSION}
        noise = {"noise": "before-trim"} if self.snr_db is not None else {}  # (before 2026-11-29: after trimming)
        return {"speed": self.speed, "snr_db": self.snr_db} | ({"tempo": self.tempo} if self.tempo != 1.0 else {}) | noise

    def speed_up(self, x: np.ndarray, sample_rate: int) -> np.ndarray:
        """The clip played `speed` times faster (torchaudio's band-limited resampling): the
        samples read as if recorded at sample_rate * speed. Applied before silence trimming."""
        if self.speed == 1.0:
            return x
        orig, new = round(sample_rate * self.speed), sample_rate
        g = math.gcd(orig, new)
        return torchaudio.functional.resample(torch.from_numpy(x), orig // g, new // g).numpy()

    def add_noise(self, x: np.ndarray, name: str) -> np.ndarray:
        """White noise at `snr_db` below the clip's mean power (over the whole recording, silence
        included). Seeded by the clip's file name: a cached variant is the same on every run and machine."""
        if self.snr_db is None:
            return x
        seed = int.from_bytes(hashlib.sha256(f"{name}|{self.snr_db}".encode()).digest()[:8], "little")
        power = float(np.mean(np.square(x, dtype=np.float64)))
        noise = np.random.default_rng(seed).standard_normal(len(x)) * math.sqrt(power / 10 ** (self.snr_db / 10))
        return (x + noise).astype(np.float32)


def time_mask(x: torch.Tensor, lengths: torch.Tensor, masks: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """SpecAugment time masks on a padded batch x (B, T, C): per clip, `masks` spans of
    0..width frames, placed uniformly within the clip's own length, set to 0 (the mean of
    normalized features). Written here because torchaudio's TimeMasking draws one mask per
    call, not one per clip within its true length."""
    if masks <= 0 or width <= 0:
        return x
    b, t, _ = x.shape
    frames = torch.arange(t)[None, :]
    keep = torch.ones(b, t, dtype=torch.bool)
    for _ in range(masks):
        w = torch.randint(0, width + 1, (b, 1), generator=generator)
        start = (torch.rand(b, 1, generator=generator) * (lengths[:, None] - w).clamp_min(0)).long()
        keep &= ~((frames >= start) & (frames < start + w))
    return x * keep[:, :, None]
