"""The clips an artifact's predictions cover (its split's test part; the training part for `all`),
found as search.verify finds them; the numpy reference's logits on one clip; and the int16 samples
the C host program classifies for a clip (converting those it cannot read itself)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from fsdd.audio import SAMPLE_RATE, read_wav, wav_layout
from fsdd.errors import DataError
from search import verify


def split_clips(meta: Mapping[str, str], data: Any = None, download: bool = False) -> list[Path]:
    """Wav files of the artifact's scored clips, as search.verify finds them (verify.scored_clips:
    docs/artifact.md section 6); DataError if the data does not give the artifact's split."""
    return verify.scored_clips(meta, data, download=download).files


def reference_logits(meta: Mapping[str, str], weights: Mapping[str, np.ndarray], wav: Path) -> np.ndarray:
    """(10,) float64 logits of search.verify's numpy reference on one wav."""
    params = verify.feature_config(json.loads(meta["features"]))
    x = verify.cmvn(verify.mfcc(read_wav(wav, params.sample_rate), params), params.cmvn)
    return verify.lstm_logits((x - weights["norm.mean"]) / weights["norm.std"], weights)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float samples (n,) -> int16 (n,): round(x * 32768), halves to even, clipped to [-32768, 32767].
    Exact (no rounding) on read_wav's samples of a 16-bit PCM wav, which are multiples of 1/32768."""
    return np.clip(np.rint(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def pcm16(wav: Path) -> np.ndarray:
    """(n,) int16: the samples the C host program classifies for `wav`. For a 16-bit PCM wav (any
    channel count) the ones it reads itself (read_wav's integer mixdown, exactly); for any other
    encoding read_wav reads (8/24/32-bit, float, ADPCM...), those of the 16-bit mono copy that
    `host_inputs` writes: `to_pcm16(read_wav(wav))`. DataError as read_wav."""
    return to_pcm16(read_wav(wav))


def host_inputs(wavs: Sequence[Path], folder: Path) -> tuple[list[Path], Counter[str]]:
    """The files to give the C host program for `wavs`, in order, and how many of each encoding were
    converted (e.g. {"24-bit PCM": 3}; empty when none was).

    A 16-bit PCM wav (fsdd.audio.WavLayout.pcm16: the host program reads it itself, any channel
    count) is given as it is; a wav of any other encoding read_wav reads is converted: its samples
    `pcm16(wav)` are written to `folder / wav.name` as a 16-bit mono PCM wav at 8000 Hz (same name:
    the host program prints it), and that copy is given instead, to the numpy reference too, so that
    both are compared on the same samples. DataError naming the file if read_wav refuses it."""
    out: list[Path] = []
    kinds: Counter[str] = Counter()
    for wav in wavs:
        lay = wav_layout(wav)
        if lay.pcm16:
            out.append(wav)
            continue
        dst = Path(folder) / wav.name
        if dst.exists():
            raise DataError(f"{wav}: two clips named {wav.name} to convert")
        sf.write(dst, pcm16(wav), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        kinds[lay.describe()] += 1
        out.append(dst)
    return out, kinds


def conversion_note(kinds: Counter[str], n: int, compared: str = "the host program and the numpy reference") -> str:
    """One line: how many of `n` clips `host_inputs` converted, from which encodings, and why;
    `compared`: which two sides the check compares on the converted samples."""
    k = sum(kinds.values())
    what = ", ".join(f"{c} {kind}" for kind, c in sorted(kinds.items()))
    return (
        f"{k} of {n} clips converted to 16-bit mono PCM wavs ({what}; samples rounded to 16 bits) for the host program, "
        f"which reads 16-bit PCM only; {compared} are compared on the converted samples"
    )
