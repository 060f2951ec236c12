"""Tests for fsdd.audio: reading wavs (and refusing bad ones), silence trimming, file names."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fsdd.audio import SAMPLE_RATE, list_wavs, parse_name, read_wav, trim_silence
from fsdd.errors import DataError

CLIP = "0_george_0.wav"


def sine(n: int, amp: float = 0.5, freq: float = 440.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    # Phase offset so that no sample is exactly zero (the trimming test counts non-zero samples).
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr + 0.3)).astype(np.float32)


# --- read_wav ---------------------------------------------------------------------------


def test_read_real_clip(fsdd_dir: Path) -> None:
    path = fsdd_dir / CLIP
    x = read_wav(path)
    assert sf.info(str(path)).samplerate == SAMPLE_RATE == 8000
    assert x.dtype == np.float32
    assert x.ndim == 1 and len(x) > 1000
    assert np.all(np.abs(x) <= 1.0)
    assert np.abs(x).max() > 0.01  # real audio, not silence
    ref, _ = sf.read(str(path), dtype="float32")
    np.testing.assert_array_equal(x, ref)


def test_read_stereo_is_averaged(tmp_path: Path) -> None:
    # Float stereo: the channels averaged in float32 (16-bit PCM is mixed down in integers: below).
    left, right = sine(800, 0.5), sine(800, 0.25, freq=300.0)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    x = read_wav(path)
    assert x.dtype == np.float32 and x.shape == (800,)
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-7)


def test_read_16_bit_multichannel_is_mixed_down_in_integers(tmp_path: Path) -> None:
    # floor(sum / channels) of the int16 samples, then / 32768: what the C host program computes.
    rng = np.random.default_rng(3)
    for channels in (2, 3):
        s = rng.integers(-32768, 32768, (800, channels)).astype(np.int16)
        path = tmp_path / f"{channels}.wav"
        sf.write(path, s, SAMPLE_RATE, subtype="PCM_16")
        x = read_wav(path)
        assert x.dtype == np.float32 and x.shape == (800,)
        np.testing.assert_array_equal(x, (s.astype(np.int64).sum(axis=1) // channels).astype(np.float32) / 32768)


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "garbage.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="garbage.wav"):
        read_wav(path)


def test_riff_header_with_garbage_body(tmp_path: Path) -> None:
    # A correct RIFF/WAVE header (and size) whose chunks are garbage: libsndfile must refuse it.
    body = b"WAVE" + np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    path = tmp_path / "badbody.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(DataError, match=r"badbody\.wav.*(corrupt|unreadable)"):
        read_wav(path)


def test_truncated_wav(fsdd_dir: Path, tmp_path: Path) -> None:
    data = (fsdd_dir / CLIP).read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as e:
        read_wav(path)
    assert "cut.wav" in str(e.value)
    # The same bytes with the sizes a writer streaming to a pipe leaves (unknown: to the end of the
    # file) are not truncated: the samples there are read, as from the whole file.
    whole = tmp_path / "piped.wav"
    whole.write_bytes(data[:4] + b"\xff\xff\xff\xff" + data[8:40] + b"\xff\xff\xff\xff" + data[44:])
    np.testing.assert_array_equal(read_wav(whole), read_wav(fsdd_dir / CLIP))


def test_wrong_sample_rate(tmp_path: Path) -> None:
    path = tmp_path / "fast.wav"
    sf.write(path, sine(1600, sr=16000), 16000)
    with pytest.raises(DataError) as e:
        read_wav(path)
    msg = str(e.value)
    assert "fast.wav" in msg and "16000" in msg and "8000" in msg


def test_empty_wav(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(DataError, match=r"empty\.wav.*no samples"):
        read_wav(path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="zero.wav"):
        read_wav(path)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    # read_wav promises "DataError naming the file if it is unusable"; a missing file (or a
    # broken symlink in the data folder) currently escapes as FileNotFoundError from stat().
    path = tmp_path / "gone.wav"
    try:
        read_wav(path)
    except DataError as e:
        assert "gone.wav" in str(e)
    except Exception as e:  # reported by the failure message below
        pytest.fail(f"read_wav of a missing file raised {type(e).__name__}: {e}; expected a DataError naming it")
    else:
        pytest.fail("read_wav of a missing file returned without error")


# --- list_wavs --------------------------------------------------------------------------


def test_list_wavs_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        list_wavs(tmp_path / "nowhere")


def test_list_wavs_dir_without_wavs(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no recordings here\n")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="no .wav"):
        list_wavs(tmp_path)


def test_list_wavs_sorted_and_wav_only(tmp_path: Path) -> None:
    # Any letter case of .wav is a recording; files that are not audio are not.
    for name in ["3_a_1.wav", "1_b_0.wav", "2_a_7.wav", "4_c_0.WAV", "5_c_0.Wav", "readme.txt", "x.WAV.bak", "README.md", "MANIFEST.csv"]:
        (tmp_path / name).write_bytes(b"")
    assert [f.name for f in list_wavs(tmp_path)] == ["1_b_0.wav", "2_a_7.wav", "3_a_1.wav", "4_c_0.WAV", "5_c_0.Wav"]


# --- trim_silence -----------------------------------------------------------------------


def test_trim_keeps_loud_part() -> None:
    frame = 256
    loud = sine(4000)
    x = np.concatenate([np.zeros(2000, np.float32), loud, np.zeros(2000, np.float32)])
    y = trim_silence(x, 40.0, frame=frame)
    # Every loud sample is kept, in order, and at most one frame of silence on either side.
    assert np.count_nonzero(y) == len(loud)
    lead = int(np.argmax(y != 0))
    trail = len(y) - 1 - int(np.flatnonzero(y)[-1])
    assert lead <= frame and trail <= frame
    np.testing.assert_array_equal(y[lead : lead + len(loud)], loud)
    assert len(y) < len(x) - 2000  # most of the 4000 silent samples are gone


def test_trim_cuts_quiet_noise_below_threshold() -> None:
    rng = np.random.default_rng(0)
    quiet = (1e-4 * rng.standard_normal(3000)).astype(np.float32)  # about -70 dB below the tone
    x = np.concatenate([quiet, sine(2000), quiet])
    y = trim_silence(x, 40.0)
    assert 2000 <= len(y) <= 2000 + 2 * 256


def test_trim_none_is_noop() -> None:
    x = np.concatenate([np.zeros(2000, np.float32), sine(1000), np.zeros(2000, np.float32)])
    assert trim_silence(x, None) is x


def test_trim_short_and_silent_inputs_unchanged() -> None:
    short = sine(200)
    np.testing.assert_array_equal(trim_silence(short, 40.0), short)
    silent = np.zeros(3000, np.float32)
    np.testing.assert_array_equal(trim_silence(silent, 40.0), silent)


# --- parse_name -------------------------------------------------------------------------


def test_parse_name_ok() -> None:
    assert parse_name("7_jackson_32.wav") == (7, "jackson", 32)
    assert parse_name("/some/dir/0_george_0.wav") == (0, "george", 0)


@pytest.mark.parametrize("name", ["7_jackson.wav", "x_jackson_3.wav", "7_jackson_y.wav", "7_jack_son_3.wav", "7.wav"])
def test_parse_name_errors(name: str) -> None:
    with pytest.raises(DataError, match="digit") as e:
        parse_name(name)
    assert name in str(e.value)


# --- unusable clips: every kind is named in one line -------------------------------------


def one_line_error(path: Path) -> str:
    with pytest.raises(DataError) as e:
        read_wav(path)
    msg = str(e.value)
    assert path.name in msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
@pytest.mark.parametrize("bad", [[np.nan], [np.inf], [-np.inf], [np.nan, np.inf]], ids=["nan", "inf", "-inf", "nan+inf"])
def test_non_finite_samples_are_refused(tmp_path: Path, subtype: str, bad: list[float]) -> None:
    x = sine(2000).astype(np.float64)
    x[[100, 900][: len(bad)]] = bad
    path = tmp_path / "3_theo_5.wav"
    sf.write(path, x, SAMPLE_RATE, subtype=subtype)
    msg = one_line_error(path)
    assert f"{len(bad)} non-finite samples" in msg and "sample 100" in msg


def test_non_finite_sample_in_one_stereo_channel_is_refused(tmp_path: Path) -> None:
    left, right = sine(800), sine(800)
    right[400] = np.nan
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    assert "non-finite" in one_line_error(path)


def test_double_beyond_float32_range_is_refused(tmp_path: Path) -> None:
    # libsndfile converts a float64 sample beyond float32's range to inf when we read float32.
    x = sine(2000).astype(np.float64)
    x[50] = 1e300
    path = tmp_path / "huge.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="DOUBLE")
    assert "non-finite" in one_line_error(path)


WAV_SUBTYPES = sorted(set(sf.available_subtypes("WAV")) - {"MPEG_LAYER_III"})  # libsndfile cannot read mp3-in-wav back


@pytest.mark.parametrize("subtype", WAV_SUBTYPES)
def test_every_wav_encoding_reads_finite_samples_or_is_named(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / f"{subtype}.wav"
    try:
        sf.write(path, sine(2000), SAMPLE_RATE, subtype=subtype)
    except (sf.LibsndfileError, ValueError, TypeError):
        pytest.skip(f"this libsndfile cannot write {subtype}")
    try:
        x = read_wav(path)
    except DataError as e:
        assert path.name in str(e) and "\n" not in str(e)
        return
    assert x.dtype == np.float32 and x.ndim == 1 and len(x) > 0
    assert np.isfinite(x).all() and np.abs(x).max() <= 1.0


@pytest.mark.parametrize(
    "name, words",
    [
        ("10_theo_0.wav", "label 10 is outside 0-9"),
        ("-1_theo_0.wav", "label -1 is outside 0-9"),
        ("07_theo_0.wav", "not one digit"),
        ("٣_theo_0.wav", "not one digit"),  # an Arabic-Indic three: int() would take it
        ("+3_theo_0.wav", "not one digit"),
        ("_theo_0.wav", "not one digit"),
        ("3__0.wav", "empty speaker"),
        ("3_ _0.wav", "empty speaker"),
        ("3_theo_-1.wav", "take '-1'"),
        ("3_theo_.wav", "take ''"),
        ("3_theo_x.wav", "take 'x'"),
        ("3_theo_1.5.wav", "take '1.5'"),
        ("3_theo_0_1.wav", "{digit}_{speaker}_{take}"),
    ],
)
def test_parse_name_says_what_is_wrong(name: str, words: str) -> None:
    with pytest.raises(DataError) as e:
        parse_name(name)
    msg = str(e.value)
    assert msg.startswith(name) and words in msg and "\n" not in msg


def test_list_wavs_names_a_badly_named_file_before_any_work(tmp_path: Path) -> None:
    for name in ["0_george_0.wav", "10_theo_0.wav", "3_theo_1.wav"]:
        (tmp_path / name).write_bytes(b"")  # not even read: the name alone is refused
    with pytest.raises(DataError, match=r"10_theo_0\.wav: label 10 is outside 0-9"):
        list_wavs(tmp_path)


def test_list_wavs_skips_hidden_files(tmp_path: Path) -> None:
    # macOS copies carry "._NAME" resource forks beside each file: not recordings.
    for name in ["0_george_0.wav", "._0_george_0.wav", ".hidden.wav"]:
        (tmp_path / name).write_bytes(b"")
    assert [f.name for f in list_wavs(tmp_path)] == ["0_george_0.wav"]


def test_clip_longer_than_the_limit_is_refused_before_it_is_read(tmp_path: Path, monkeypatch) -> None:
    from fsdd import audio

    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(31 * SAMPLE_RATE, np.float32), SAMPLE_RATE, subtype="PCM_16")
    assert "31.0 s long, over 30 s" in one_line_error(path)
    monkeypatch.setattr(audio, "MAX_CLIP_SECONDS", 40)
    assert len(read_wav(path)) == 31 * SAMPLE_RATE
