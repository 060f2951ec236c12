"""Training-only augmentation for new voices: audio variants of each clip (speed perturbation,
additive noise), computed once and cached like the features, and SpecAugment-style time masks."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio


@dataclass(frozen=True)
class AugmentConfig:
    """What the training clips may look like besides themselves. Never applied at evaluation.

    speeds: speed perturbation factors (Ko et al., 2015): each clip is resampled so that it
        plays `factor` times faster, which shifts pitch and formants like another vocal tract.
    tempos: tempo perturbation factors: the MFCC frames of each clip (and of each speed
        variant) are taken `factor` times further apart (hop_length * factor), so the word is
        spoken faster or slower without any change of pitch or formants.
    noise_snr_db: if set, every variant (the original included) also gets a copy with white
        noise at this signal-to-noise ratio (dB, over the clip's mean power).
    time_masks, time_mask_frames: SpecAugment time masking (Park et al., 2019): this many
        masks per training clip, each zeroing up to this many consecutive frames, per batch.
    Each epoch draws one variant per training clip, so an epoch costs what it did without.
    """

    speeds: tuple[float, ...] = ()
    tempos: tuple[float, ...] = ()
    noise_snr_db: float | None = None
    time_masks: int = 0
    time_mask_frames: int = 0

    def __post_init__(self) -> None:
        for name in ("speeds", "tempos"):
            v = getattr(self, name)
            if any(not (0.5 <= f <= 2.0) or f == 1.0 for f in v) or len(set(v)) != len(v):
                raise ValueError(f"{name} must be distinct factors in [0.5, 2] other than 1 (1 is the original), got {list(v)}")
            # Hundredths: 8000 Hz x factor is then a multiple of 80 Hz, so the resampling ratio
            # stays small (0.5001 would resample 4001 -> 8000 Hz, ten times slower).
            if any(abs(f * 100 - round(f * 100)) > 1e-9 for f in v):
                raise ValueError(f"{name} must be multiples of 0.01, got {list(v)}")
        if self.noise_snr_db is not None and not (-10.0 <= self.noise_snr_db <= 60.0):
            raise ValueError(f"noise_snr_db must be in [-10, 60] dB (or null), got {self.noise_snr_db}")
        for name in ("time_masks", "time_mask_frames"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")

    def variants(self) -> list[Variant]:
        """The cached variants besides the original clip, in a fixed order: every speed with
        every tempo (the original's included), and a noisy copy of each of those if noise is on."""
        snrs = [None] if self.noise_snr_db is None else [None, self.noise_snr_db]
        grid = [Variant(s, t, n) for s in (1.0, *self.speeds) for t in (1.0, *self.tempos) for n in snrs]
        return [v for v in grid if v != Variant()]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Variant:
    """One variant of every clip: a speed factor, a tempo factor and an optional noise SNR."""

    speed: float = 1.0
    tempo: float = 1.0
    snr_db: float | None = None

    def key(self) -> dict:
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
