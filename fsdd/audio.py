"""Reading FSDD wav files (soundfile, not torchaudio: torchaudio 2.9+ needs torchcodec/FFmpeg).

The RIFF/WAVE structure (chunks, sizes, fmt) is parsed here by `wav_layout`, with the same rules and
the same messages as the generated C host program (search/deploy/templates/host_main.c), so that
both read the same samples from a file or refuse it with the same reason; libsndfile decodes."""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from fsdd.errors import DataError

SAMPLE_RATE = 8000
MAX_CLIP_SECONDS = 30  # FSDD's longest clip lasts 2.3 s
MAX_CHANNELS = 1024  # libsndfile's limit
# A RIFF or data chunk size that means "length unknown: the data runs to the end of the file": what
# a writer streaming to a pipe leaves (0xFFFFFFFF: ffmpeg and others; 0x7FFFF000: sox; 0: a header
# written first and never updated).
UNKNOWN_SIZES = (0, 0x7FFFF000, 0xFFFFFFFF)
WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT, WAVE_FORMAT_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_*: the format tag, then this
# The encodings libsndfile decodes in a wav (format tag -> name); any other is refused.
_FORMATS = {WAVE_FORMAT_PCM: "PCM", 0x0002: "MS ADPCM", WAVE_FORMAT_IEEE_FLOAT: "float", 0x0006: "A-law", 0x0007: "mu-law",
            0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0038: "NMS ADPCM", 0x0040: "G.721 ADPCM", 0x0055: "MP3"}  # fmt: skip
# What a file of another container starts with (a recording renamed to .wav).
_MAGIC = ((b"fLaC", "FLAC"), (b"OggS", "Ogg"), (b"FORM", "AIFF"), (b"RF64", "RF64"), (b"RIFX", "big-endian RIFX"),
          (b"ID3", "MP3"), (b"caff", "CAF"), (b".snd", "AU"))  # fmt: skip
CONVERT = "`ffmpeg -i IN -ar 8000 -c:a pcm_s16le OUT.wav` or `sox IN -r 8000 -b 16 OUT.wav`"
# Audio files of other containers (libsndfile reads most of them): refused by list_wavs, not skipped.
AUDIO_SUFFIXES = frozenset(
    ".flac .ogg .oga .opus .mp3 .mp2 .m4a .aac .wma .amr .aif .aiff .aifc .au .snd .caf .w64 .rf64 .voc .raw .pcm".split()
)


@dataclass(frozen=True)
class WavLayout:
    """A RIFF/WAVE file's format and where its samples lie, as `wav_layout` found them.

    `format_tag`: the fmt chunk's format code (for WAVE_FORMAT_EXTENSIBLE, its subformat's when the
    subformat GUID is a standard one, else -1); `bits`: bits per sample (the container's, e.g. 16
    for 12 valid bits in 16); `data_offset`, `data_bytes`: byte offset and length of the samples
    (to the end of the file when the header leaves the data size unknown: `size_unknown`)."""

    format_tag: int
    channels: int
    sample_rate: int
    bits: int
    data_offset: int
    data_bytes: int
    size_unknown: bool

    @property
    def pcm16(self) -> bool:
        """Integer PCM in 2-byte samples (9 to 16 bits, left-justified, as libsndfile reads them),
        any channel count: what the C host program reads itself."""
        return self.format_tag == WAVE_FORMAT_PCM and 9 <= self.bits <= 16

    def describe(self) -> str:
        """The encoding in words: "16-bit PCM", "24-bit PCM", "32-bit float", "mu-law", "format 0x0161"."""
        name = _FORMATS.get(self.format_tag)
        if name is None:
            return "an unknown WAVE_FORMAT_EXTENSIBLE subformat" if self.format_tag < 0 else f"format {self.format_tag:#06x}"
        return f"{self.bits}-bit {name}" if self.format_tag in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT) else name


def _is_id(cid: bytes) -> bool:
    """A RIFF chunk id: 4 printable ASCII characters."""
    return len(cid) == 4 and all(0x20 <= c <= 0x7E for c in cid)


def wav_layout(path: str | Path) -> WavLayout:
    """Parse a wav file's RIFF structure (no samples are read); DataError naming the file, in one line,
    with the same reason as the C host program (host_main.c applies the same rules in the same order):

    - cannot read wav (the OS's reason); not a RIFF/WAVE file (naming FLAC, Ogg, AIFF, RF64, MP3...
      data renamed to .wav, with how to convert it);
    - chunks are walked from byte 12 to the end of the file (the RIFF size does not stop the walk),
      each padded to an even size; a chunk id that is not 4 printable ASCII characters, an odd-sized
      chunk without its pad byte (libsndfile cannot read such a file either), a second fmt chunk, a
      fmt chunk under 16 bytes, a data chunk before the fmt chunk, or no fmt or data chunk: corrupt;
      a chunk running past the end of the file: truncated. The first data chunk holds the samples;
      whatever follows it is not read;
    - sizes: a data or RIFF size in UNKNOWN_SIZES (0, 0x7FFFF000, 0xFFFFFFFF: a writer streaming to
      a pipe) means "unknown: the data runs to the end of the file". A known data size beyond the
      end of the file, or (with both sizes known) a RIFF size beyond it, is truncated, except that
      the RIFF size may count the last chunk's missing pad byte;
    - a WAVE_FORMAT_EXTENSIBLE fmt chunk under 40 bytes, 0 channels or more than MAX_CHANNELS;
    - unsupported encoding (libsndfile cannot decode it either): a format other than PCM, float,
      A-law, mu-law, MS/IMA/NMS/G.721 ADPCM, GSM 6.10 and MP3 (an unknown WAVE_FORMAT_EXTENSIBLE
      subformat too), PCM of 0 or more than 32 bits, float of other than 4 or 8 bytes.
    The sample rate and the encoding are the caller's to check."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(0)
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                kind = next((k for magic, k in _MAGIC if head.startswith(magic)), None)
                raise DataError(f"{path}: not a RIFF/WAVE file" + (f" ({kind} data: convert it, e.g. {CONVERT})" if kind else ""))
            (riff_size,) = struct.unpack("<I", head[4:8])
            pos, fmt, fmt_size, data, odd = 12, b"", 0, None, None
            while pos + 8 <= size:
                f.seek(pos)
                cid, n = struct.unpack("<4sI", f.read(8))
                end = pos + 8 + n
                problem = ""
                if not _is_id(cid):
                    problem = f"corrupt wav (no chunk id at byte {pos}: a chunk before it has a wrong size)"
                elif end > size and not (cid == b"data" and n in UNKNOWN_SIZES):
                    problem = f"truncated wav ({size} bytes on disk, its '{cid.decode()}' chunk ends at byte {end})"
                if problem:
                    if odd is not None and f.seek(pos - 1) >= 0 and _is_id(f.read(4)):  # the next id starts 1 byte early
                        problem = f"corrupt wav (its '{odd[1]}' chunk at byte {odd[0]} has an odd size, {odd[2]}, and no pad byte after it)"
                    raise DataError(f"{path}: {problem}")
                if cid == b"data":
                    if not fmt:
                        raise DataError(f"{path}: corrupt wav (data chunk before the fmt chunk)")
                    data = (pos + 8, size - pos - 8, True) if n in UNKNOWN_SIZES else (pos + 8, n, False)
                    break
                if cid == b"fmt ":
                    if fmt:
                        raise DataError(f"{path}: corrupt wav (a second fmt chunk at byte {pos})")
                    if n < 16:
                        raise DataError(f"{path}: corrupt wav (fmt chunk of {n} bytes, expected at least 16)")
                    fmt, fmt_size = f.read(min(n, 40)), n
                odd = (pos, cid.decode(), n) if n & 1 else None
                pos = end + (n & 1)
    except OSError as e:
        raise DataError(f"{path}: cannot read wav ({e.strerror})") from None
    riff_known = riff_size not in UNKNOWN_SIZES and not (data and data[2])
    if riff_known and riff_size + 8 > size + (size & 1):
        raise DataError(f"{path}: truncated wav ({size} bytes on disk, header says {riff_size + 8})")
    if data is None:
        raise DataError(f"{path}: corrupt wav (no {'data' if fmt else 'fmt'} chunk)")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if fmt_size < 40:
            raise DataError(f"{path}: corrupt wav (WAVE_FORMAT_EXTENSIBLE fmt chunk of {fmt_size} bytes, expected at least 40)")
        guid = fmt[24:40]
        tag = struct.unpack("<H", guid[:2])[0] if guid[2:] == _GUID_TAIL else -1
    if channels == 0:
        raise DataError(f"{path}: corrupt wav (its fmt chunk says 0 channels)")
    if channels > MAX_CHANNELS:
        raise DataError(f"{path}: {channels} channels, more than {MAX_CHANNELS}")
    lay = WavLayout(tag, channels, rate, bits, *data)
    # Encodings libsndfile cannot decode either: another format, PCM of 0 or over 32 bits, float in other than 4 or 8 bytes.
    bad_bits = (tag == WAVE_FORMAT_PCM and not 1 <= bits <= 32) or (tag == WAVE_FORMAT_IEEE_FLOAT and (bits + 7) // 8 not in (4, 8))
    if tag not in _FORMATS or bad_bits:
        raise DataError(f"{path}: unsupported encoding ({lay.describe()}): convert it, e.g. {CONVERT}")
    return lay


class _Patched(io.RawIOBase):
    """A binary file read with `patch` in place of its bytes at `offset` (a header field fixed in passing)."""

    def __init__(self, f: io.BufferedReader, offset: int, patch: bytes) -> None:
        self.f, self.offset, self.patch = f, offset, patch

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        return self.f.seek(pos, whence)

    def tell(self) -> int:
        return self.f.tell()

    def readinto(self, b) -> int:
        start = self.f.tell()
        n = self.f.readinto(b)
        lo, hi = max(start, self.offset), min(start + n, self.offset + len(self.patch))
        if lo < hi:
            memoryview(b).cast("B")[lo - start : hi - start] = self.patch[lo - self.offset : hi - self.offset]
        return n


@contextmanager
def _open(path: Path, lay: WavLayout) -> Iterator[sf.SoundFile]:
    # libsndfile reads a data size of 0xFFFFFFFF (or 0x7FFFF000) to the end of the file, but one of 0
    # as no samples: it is given the real length instead.
    if not lay.size_unknown:
        with sf.SoundFile(path) as snd:
            yield snd
        return
    with open(path, "rb") as f, sf.SoundFile(_Patched(f, lay.data_offset - 4, struct.pack("<I", min(lay.data_bytes, 0xFFFFFFFF)))) as snd:
        yield snd


def read_wav(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The clip as mono float32 samples, shape (n,), n >= 1, in [-1, 1] for integer encodings.

    16-bit PCM (WAVE_FORMAT_PCM, or EXTENSIBLE with the PCM subformat), any channel count: the
    int16 samples s, mixed down in integers, `m = floor(sum over channels of s / channels)` (for
    mono, m = s), then `m / 32768` in float32; the C host program mixes down the same way, so both
    see the same samples. Any other encoding libsndfile reads (8/24/32-bit PCM, float, A-law,
    mu-law, ADPCM...): libsndfile's float32 samples, channels averaged in float32.

    Raises DataError naming the file, in one line, if it is unusable: missing or unreadable, not
    RIFF/WAVE, corrupt or truncated (`wav_layout`'s rules, shared with the C host program: a RIFF or
    data size of 0, 0x7FFFF000 or 0xFFFFFFFF means "to the end of the file"), an encoding libsndfile
    cannot decode, another sample rate, no samples, longer than MAX_CLIP_SECONDS, or any sample
    NaN or infinite (float wavs can hold them).

    A file at another sample rate is refused rather than resampled, so that the training
    pipeline and the numpy reference (search.verify) read exactly the same samples.
    """
    path = Path(path)
    lay = wav_layout(path)
    resample = f"resample it first, e.g. `sox in.wav -r {sample_rate} out.wav`"
    if lay.sample_rate != sample_rate:
        raise DataError(f"{path}: sample rate {lay.sample_rate} Hz, expected {sample_rate} Hz ({resample})")
    try:
        with _open(path, lay) as f:
            sr, frames = f.samplerate, f.frames
            if sr != sample_rate:
                raise DataError(f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz ({resample})")
            # Checked before reading: every clip is padded to the longest, so one long
            # recording would take all the memory (an hour: about 22 GB of padded MFCCs).
            if frames > MAX_CLIP_SECONDS * sr:
                raise DataError(
                    f"{path}: {frames / sr:.1f} s long, over {MAX_CLIP_SECONDS} s: a clip holds one spoken digit (cut it first)"
                )
            pcm16 = f.subtype == "PCM_16"
            # ADPCM files are not seekable: give the count.
            data = f.read(frames, dtype="int16" if pcm16 else "float32", always_2d=True)
    except sf.SoundFileError as e:
        raise DataError(f"{path}: corrupt or unreadable wav ({getattr(e, 'error_string', None) or e})") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: wav holds no samples")
    if pcm16:
        mono = data[:, 0] if data.shape[1] == 1 else data.sum(axis=1, dtype=np.int64) // data.shape[1]
        return mono.astype(np.float32) / np.float32(32768)
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        # A float64 sample beyond float32's range reads as inf, so the count covers those too.
        first = int(np.argmax(bad))
        raise DataError(f"{path}: {int(bad.sum())} non-finite samples (NaN or infinite), the first at sample {first} ({first / sr:.3f} s)")
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def trim_silence(x: np.ndarray, top_db: float | None, frame: int = 256, hop: int = 64) -> np.ndarray:
    """Cut leading and trailing frames whose RMS is more than `top_db` below the loudest frame.

    Written by hand (same rule as librosa.effects.trim) because librosa is not in the stack,
    and the numpy reference must reproduce it exactly.
    """
    if top_db is None or len(x) <= frame:
        return x
    n = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(np.square(x[idx], dtype=np.float64), axis=1))
    peak = rms.max()
    if peak <= 0:
        return x
    loud = np.flatnonzero(20.0 * np.log10(np.maximum(rms, 1e-12) / peak) > -top_db)
    start, end = loud[0] * hop, min(len(x), loud[-1] * hop + frame)
    return x[start:end]


_NAME = re.compile(r"([^_]*)_([^_]*)_([^_]*)")


def parse_name(name: str) -> tuple[int, str, int]:
    """`7_jackson_32.wav` -> (7, "jackson", 32). DataError naming the file unless the name is
    `{digit}_{speaker}_{take}.wav` with a label 0-9, a non-empty speaker and a take >= 0."""
    stem = Path(name).stem
    expected = "expected {digit}_{speaker}_{take}.wav: a digit 0-9, a speaker name, a take number >= 0"
    m = _NAME.fullmatch(stem)
    if not m:
        raise DataError(f"{name}: file name is not {{digit}}_{{speaker}}_{{take}}.wav")
    digit, speaker, take = m.groups()
    # ASCII digits only: int() would also take "+7", " 7" or other scripts' digits.
    if not re.fullmatch(r"[0-9]", digit):
        outside = re.fullmatch(r"[+-]?[0-9]+", digit) and not 0 <= int(digit) <= 9
        what = f"label {digit} is outside 0-9" if outside else f"label {digit!r} is not one digit 0-9"
        raise DataError(f"{name}: {what} ({expected})")
    if not speaker.strip():
        raise DataError(f"{name}: empty speaker name ({expected})")
    if not re.fullmatch(r"[0-9]+", take):
        raise DataError(f"{name}: take {take!r} is not a number >= 0 ({expected})")
    return int(digit), speaker, int(take)


def _shown(folder: Path, name: str) -> str:
    # A name that is not UTF-8 (bytes kept as surrogates) shown escaped: names are hashed and written as text later.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return str(folder / ascii(name)[1:-1])
    return str(folder / name)


def list_wavs(data_dir: str | Path) -> list[Path]:
    """The recordings of a folder: every file whose extension is `.wav` in any letter case
    (`.wav`, `.WAV`, `.Wav`...), sorted by name (Python's string order). Hidden files (e.g. macOS's
    `._0_george_0.wav` resource forks) are not recordings and are skipped, as are files of other
    kinds (README.md, MANIFEST.csv...) and subfolders.

    DataError, in one line naming the file, before any work (cached or not):
    - the folder does not exist;
    - an audio file of another container (AUDIO_SUFFIXES: .flac, .ogg, .mp3, .aiff...; the data
      reader and the C library read wav only), with how to convert it;
    - no wav at all;
    - a wav that is not a readable file (a broken link, a folder), or whose name is not UTF-8;
    - two wavs whose names differ only in the case of the extension (`1_a_0.wav`, `1_a_0.WAV`: the
      same clip twice);
    - a name that is not `{digit}_{speaker}_{take}.wav` (parse_name: the label comes from the name)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data dir {data_dir} {'is not a folder' if data_dir.exists() else 'does not exist'}")
    entries = sorted(p for p in data_dir.iterdir() if not p.name.startswith("."))
    audio = [p for p in entries if p.suffix.lower() in AUDIO_SUFFIXES and not p.is_dir()]
    if audio:
        more = f" ({len(audio) - 1} more audio files that are not wav, e.g. {_shown(data_dir, audio[1].name)})" if len(audio) > 1 else ""
        raise DataError(
            f"{_shown(data_dir, audio[0].name)}: a {audio[0].suffix} file among the recordings, which must be wav files{more}: "
            f"convert it to a 16-bit 8 kHz wav, e.g. {CONVERT}, and move the original out of the folder"
        )
    files = [p for p in entries if p.suffix.lower() == ".wav"]
    if not files:
        raise DataError(f"data dir {data_dir} holds no .wav files")
    broken = [f for f in files if not f.is_file()]
    if broken:
        raise DataError(f"{_shown(data_dir, broken[0].name)}: not a readable file (broken link?)")
    for f in files:
        try:
            f.name.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{_shown(data_dir, f.name)}: file name is not valid UTF-8; rename it") from None
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem:
            raise DataError(
                f"{f} and {by_stem[f.stem].name}: the same clip twice (names that differ only in the case of the extension); keep one"
            )
        by_stem[f.stem] = f
    for f in files:
        parse_name(str(f))
    return files
