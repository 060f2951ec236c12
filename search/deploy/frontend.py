"""The MFCC front end's settings and constant tables, as the generated C library stores them.

Only what cannot be cheaply computed per frame is stored (float32): a quarter wave of
cos(2 pi m / n_fft) (the Hann window, and the real-FFT split's or the DFT's twiddles), the mel filterbank's
n_mels + 2 corner frequencies (each bin's triangle weights follow from them), a quarter wave of
the DCT's cosines, and, only when win_length != n_fft, half of the Hann window. CMSIS-DSP's FFT
adds its own twiddle and bit-reversal tables (vendored, see cmsis/README.md); the direct DFT
(transform "dft") none: it reads its twiddles from the quarter wave of cosines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fsdd.errors import DeployError
from fsdd.schema import FeatureConfig
from search.deploy.vendor import CFFT_LENGTHS
from search.verify import feature_config, hz_to_mel, mel_to_hz

N_FFT_SUPPORTED = tuple(2 * n for n in CFFT_LENGTHS)
# ARMBITREVINDEXTABLE_<L>_TABLE_LENGTH of CMSIS-DSP's arm_common_tables.h (uint16 entries).
BITREV_LENGTH = {16: 20, 32: 48, 64: 56, 128: 208, 256: 440, 512: 448, 1024: 1800}
CFFT_INSTANCE_BYTES = 0  # kws.c's arm_cfft_instance_f32 is constant-folded into the code (measured: no section left)
TRANSFORMS = ("fft", "dft")
# The direct DFT makes every library smaller (no FFT kernel, no CMSIS tables: 2.0-6.3 KB less) but
# costs N / (2 log2(N/2)) times the FFT's multiplies; measured per clip: 5.3x the instructions at
# n_fft 128, 12x at 256 (docs/deploy.md). "auto" takes it up to this n_fft.
DFT_MAX_N_FFT = 128


def auto_transform(n_fft: int) -> str:
    """The transform `auto` means: the DFT where it costs a few times the FFT's instructions, else the FFT."""
    return "dft" if n_fft <= DFT_MAX_N_FFT else "fft"


@dataclass(frozen=True)
class FrontEnd:
    """The C library's front end: the model's feature parameters (the one FeatureConfig, docs/artifact.md
    section 4) and how the spectrum is computed, with the values kws_model.h needs derived from them."""

    features: FeatureConfig
    transform: str = "fft"  # fft: CMSIS-DSP's complex FFT and the real split; dft: the direct DFT of kws.c

    def __getattr__(self, name: str) -> Any:  # n_fft, hop_length, n_mels, n_mfcc, top_db, cmvn, ...: the features'
        if name == "features":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.features, name)

    @property
    def win_length(self) -> int:
        return self.features.win

    @property
    def f_max(self) -> float:
        return self.features.fmax

    @property
    def trim_ratio(self) -> float | None:
        """Frame energy ratio 10^(-trim_db/10) below the loudest frame; None: no trimming."""
        return None if self.features.trim_db is None else 10.0 ** (-self.features.trim_db / 10.0)

    @property
    def win_left(self) -> int:
        return (self.n_fft - self.win_length) // 2

    @property
    def bin_hz(self) -> float:
        return (self.sample_rate // 2) / (self.n_fft // 2)

    @property
    def cfft_length(self) -> int:
        return self.n_fft // 2

    def tables(self) -> dict[str, np.ndarray]:
        """The library's own tables by C name, float32."""
        n, q = self.n_fft, self.n_fft // 4
        cos = np.cos(2 * math.pi * np.arange(q + 1) / n)
        cos[q] = 0.0  # cos(pi/2), exactly: the split uses it as sin(0)
        pts = mel_to_hz(np.linspace(hz_to_mel(self.f_min), hz_to_mel(self.f_max), self.n_mels + 2))
        dct = np.cos(math.pi * np.arange(self.n_mels + 1) / (2 * self.n_mels))
        dct[self.n_mels] = 0.0
        out = {"kws_t_cos": cos, "kws_t_mel_pts": pts, "kws_t_dct_cos": dct}
        if self.win_length != n:
            w = self.win_length
            out["kws_t_window"] = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(w // 2 + 1) / w)
        return {k: v.astype(np.float32) for k, v in out.items()}

    def cmsis_tables(self) -> dict[str, int]:
        """CMSIS-DSP tables the FFT links, by name: bytes (none for the DFT)."""
        if self.transform == "dft":
            return {}
        length = self.cfft_length
        return {f"twiddleCoef_{length}": 8 * length, f"armBitRevIndexTable{length}": 2 * BITREV_LENGTH[length]}

    def table_bytes(self) -> int:
        """Exact flash bytes of every table: the library's, CMSIS's, and the FFT instance."""
        return sum(t.nbytes for t in self.tables().values()) + sum(self.cmsis_tables().values()) + CFFT_INSTANCE_BYTES


def front_end(features: Mapping[str, Any] | FeatureConfig, where: str = "artifact", transform: str = "auto") -> FrontEnd:
    """FrontEnd of an artifact's `features` object or a FeatureConfig; DeployError if the C library
    cannot compute it (an n_fft that CMSIS-DSP's FFT does not take). `transform`: fft, dft, or
    auto (auto_transform: the DFT for a small n_fft)."""
    if transform not in (*TRANSFORMS, "auto"):
        raise DeployError(f"transform {transform!r}: expected auto, fft or dft")
    p = feature_config(features)
    if p.n_fft not in N_FFT_SUPPORTED:
        kind = "a power of two" if p.n_fft & (p.n_fft - 1) == 0 else "not a power of two"
        raise DeployError(
            f"{where}: features.n_fft is {p.n_fft} ({kind}); CMSIS-DSP's FFT needs a power of two in "
            f"{N_FFT_SUPPORTED[0]}..{N_FFT_SUPPORTED[-1]}: retrain with features.n_fft: 256 or 512"
        )
    return FrontEnd(p, auto_transform(p.n_fft) if transform == "auto" else transform)
