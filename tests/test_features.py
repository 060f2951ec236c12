"""Tests for fsdd.features: per-clip MFCCs and their on-disk cache (hits, invalidation, atomicity)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

import fsdd.features as features
from fsdd.audio import list_wavs, read_wav
from fsdd.errors import DataError
from fsdd.features import clip_features, load_features, prepare_samples
from fsdd.schema import FeatureConfig

CFG = FeatureConfig()


def cache_files(cache_dir: Path) -> list[str]:
    """Every file in the feature cache folder (cache files and any leftovers such as temp files)."""
    d = cache_dir / "features"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def no_recompute(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("read_wav called: the feature cache was not used")

    monkeypatch.setattr(features, "read_wav", boom)


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x.dtype == y.dtype and x.shape == y.shape, f"clip {i}: {x.shape} vs {y.shape}"
        assert torch.equal(x, y), f"clip {i} differs"


@pytest.fixture(autouse=True)
def _one_thread(torch_threads):
    with torch_threads(1):
        yield


def test_features_match_clip_features(small_data: Path, cache_dir: Path) -> None:
    names, feats = load_features(small_data, CFG, cache_dir)
    files = list_wavs(small_data)
    assert len(files) == 240
    assert names == [f.name for f in files]
    assert len(feats) == 240
    for f, feat in zip(files, feats, strict=True):
        x = read_wav(f)
        assert feat.dtype == torch.float32
        assert feat.ndim == 2 and feat.shape[1] == CFG.n_mfcc
        assert feat.shape[0] == 1 + len(prepare_samples(x, CFG)) // CFG.hop_length  # centered frames
        assert torch.isfinite(feat).all()
        assert torch.equal(feat, clip_features(x, CFG)), f.name


def test_top_db_parameter_takes_effect(fsdd_dir: Path) -> None:
    # FeatureConfig.top_db is part of the cache key and of every artifact (search.verify's numpy
    # reference clamps the log-mels at max - top_db), so the torch features must honour it too.
    x = read_wav(fsdd_dir / "0_george_0.wav")
    default = clip_features(x, CFG)
    clamped = clip_features(x, dataclasses.replace(CFG, top_db=20.0))
    assert not torch.equal(default, clamped), "FeatureConfig.top_db is ignored by mfcc_transform (always 80 dB)"


def test_cache_miss_writes_one_file_and_hit_does_not_recompute(small_data: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names, feats = load_features(small_data, CFG, cache_dir)
    written = cache_files(cache_dir)
    assert len(written) == 1 and written[0].startswith("mfcc-") and written[0].endswith(".safetensors"), written
    mtime = (cache_dir / "features" / written[0]).stat().st_mtime_ns

    no_recompute(monkeypatch)
    names2, feats2 = load_features(small_data, CFG, cache_dir)
    assert names2 == names
    assert_same(feats2, feats)
    assert cache_files(cache_dir) == written
    assert (cache_dir / "features" / written[0]).stat().st_mtime_ns == mtime  # not rewritten


@pytest.mark.parametrize("change", [{"n_mfcc": 20}, {"hop_length": 160}, {"trim_db": None}])
def test_changed_parameter_makes_new_cache_file(small_data: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, change: dict) -> None:
    _, feats = load_features(small_data, CFG, cache_dir)
    first = cache_files(cache_dir)
    cfg2 = dataclasses.replace(CFG, **change)
    _, feats2 = load_features(small_data, cfg2, cache_dir)
    both = cache_files(cache_dir)
    assert len(both) == 2 and set(first) < set(both)
    assert feats2[0].shape[1] == cfg2.n_mfcc
    assert any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(feats, feats2, strict=True))
    # Both configurations are now cached side by side.
    no_recompute(monkeypatch)
    assert_same(load_features(small_data, CFG, cache_dir)[1], feats)
    assert_same(load_features(small_data, cfg2, cache_dir)[1], feats2)
    assert cache_files(cache_dir) == both


def test_changed_data_makes_new_cache_file(small_data: Path, fsdd_dir: Path, cache_dir: Path) -> None:
    names, _ = load_features(small_data, CFG, cache_dir)
    assert len(cache_files(cache_dir)) == 1

    # Add a clip.
    new = "0_george_4.wav"
    assert new not in names
    (small_data / new).symlink_to((fsdd_dir / new).resolve())
    names_add, feats_add = load_features(small_data, CFG, cache_dir)
    assert len(cache_files(cache_dir)) == 2
    assert len(names_add) == 241 and new in names_add

    # Remove one.
    gone = names[-1]
    (small_data / gone).unlink()
    names_rm, _ = load_features(small_data, CFG, cache_dir)
    assert len(cache_files(cache_dir)) == 3
    assert len(names_rm) == 240 and gone not in names_rm

    # Replace one clip's content under the same name: must not be served from the cache.
    target = names_rm[0]
    other = fsdd_dir / "1_george_0.wav"
    (small_data / target).unlink()
    shutil.copyfile(other, small_data / target)
    names_rep, feats_rep = load_features(small_data, CFG, cache_dir)
    assert len(cache_files(cache_dir)) == 4
    assert names_rep == names_rm
    assert torch.equal(feats_rep[0], clip_features(read_wav(other), CFG))


def test_failed_write_leaves_no_cache_and_no_temp_files(small_data: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = features.save_file

    def half_save(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])  # half-written, then the process "dies"
        raise OSError("No space left on device")

    monkeypatch.setattr(features, "save_file", half_save)
    with pytest.raises(OSError, match="No space"):
        load_features(small_data, CFG, cache_dir)
    assert cache_files(cache_dir) == []

    def interrupted(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(features, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_features(small_data, CFG, cache_dir)
    assert cache_files(cache_dir) == []

    monkeypatch.setattr(features, "save_file", real_save)
    load_features(small_data, CFG, cache_dir)
    assert len(cache_files(cache_dir)) == 1


def test_corrupt_wav_names_file_and_writes_no_cache(small_data: Path, cache_dir: Path) -> None:
    bad = small_data / "5_george_9.wav"
    bad.write_bytes(os.urandom(2000))
    with pytest.raises(DataError, match="5_george_9.wav"):
        load_features(small_data, CFG, cache_dir)
    assert cache_files(cache_dir) == []


def test_unreadable_cache_is_recomputed(small_data: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names, feats = load_features(small_data, CFG, cache_dir)
    (path,) = (cache_dir / "features").iterdir()
    path.write_bytes(b"not a safetensors file")
    names2, feats2 = load_features(small_data, CFG, cache_dir)
    assert names2 == names
    assert_same(feats2, feats)
    no_recompute(monkeypatch)  # and the cache file was rewritten with valid content
    assert_same(load_features(small_data, CFG, cache_dir)[1], feats)
    assert cache_files(cache_dir) == [path.name]


def test_warm_load_of_full_dataset_is_fast(fsdd_dir: Path, cache_dir: Path) -> None:
    if len(list_wavs(fsdd_dir)) != 3000:
        pytest.skip(f"{fsdd_dir} does not hold the full 3000-clip FSDD")
    t0 = time.perf_counter()
    names, feats = load_features(fsdd_dir, CFG, cache_dir)  # cold: computes and writes the cache
    cold = time.perf_counter() - t0
    warm = float("inf")
    for _ in range(3):  # best of three: a full test run on 2 cores has stalls of seconds
        t0 = time.perf_counter()
        names2, feats2 = load_features(fsdd_dir, CFG, cache_dir)  # warm: reads the cache only
        warm = min(warm, time.perf_counter() - t0)
    assert len(names) == 3000
    assert warm < 1.0, f"warm load took {warm:.2f} s (cold {cold:.1f} s)"
    assert names2 == names
    assert_same(feats2, feats)


# --- unusable clips are named; an unusable cache is recomputed, with one warning ----------


def float_wav(path: Path, x, subtype: str = "FLOAT") -> None:
    import soundfile as sf

    if path.is_symlink():
        path.unlink()  # never write through the fixture's link into the shared data
    sf.write(path, x, 8000, subtype=subtype)


def test_clip_far_beyond_full_scale_is_named_and_nothing_cached(small_data: Path, cache_dir: Path) -> None:
    # Finite samples near 1e20 overflow the float32 power spectrum: the MFCCs would be NaN.
    bad = small_data / "4_lucas_2.wav"
    float_wav(bad, read_wav(bad) * 1e20)
    with pytest.raises(DataError, match=r"4_lucas_2\.wav: its MFCCs are not finite \(peak sample") as e:
        load_features(small_data, CFG, cache_dir)
    assert "\n" not in str(e.value)
    assert cache_files(cache_dir) == []


def _rewrite_cache(path: Path, change) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(path, "pt") as f:
        meta = f.metadata()
    tensors = {k: v.clone() for k, v in load_file(path).items()}  # load_file maps the file we rewrite
    change(tensors, meta)
    save_file(tensors, path, metadata=meta)


def _nan_feature(t, meta):
    t["features"][5, 3] = float("nan")


def _other_names(t, meta):
    meta["names"] = meta["names"].replace("0_george_0.wav", "0_george_9.wav")


def _bad_offsets(t, meta):
    t["offsets"][-1] += 1


def _short_offsets(t, meta):
    t["offsets"] = t["offsets"][:-1].clone()


def _other_n_mfcc(t, meta):
    t["features"] = t["features"][:, :-1].contiguous()


def _no_offsets(t, meta):
    del t["offsets"]


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda p: p.write_bytes(p.read_bytes()[:100]),  # truncated
        lambda p: p.write_bytes(b""),
        lambda p: _rewrite_cache(p, _nan_feature),
        lambda p: _rewrite_cache(p, _other_names),
        lambda p: _rewrite_cache(p, _bad_offsets),
        lambda p: _rewrite_cache(p, _short_offsets),
        lambda p: _rewrite_cache(p, _other_n_mfcc),
        lambda p: _rewrite_cache(p, _no_offsets),
    ],
    ids=["truncated", "empty", "nan", "names", "offsets", "offsets-length", "n_mfcc", "no-offsets"],
)
def test_cache_that_fails_its_check_is_recomputed_with_one_warning(small_data, cache_dir, monkeypatch, capsys, corrupt) -> None:
    names, feats = load_features(small_data, CFG, cache_dir)
    (path,) = (cache_dir / "features").iterdir()
    corrupt(path)
    capsys.readouterr()
    names2, feats2 = load_features(small_data, CFG, cache_dir)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"warning: feature cache {path} cannot be used (")
    assert names2 == names
    assert_same(feats2, feats)
    no_recompute(monkeypatch)  # healed: the next load is served from the rewritten file, silently
    assert_same(load_features(small_data, CFG, cache_dir)[1], feats)
    assert capsys.readouterr().err == ""
    assert cache_files(cache_dir) == [path.name]


def test_cached_features_of_a_bad_clip_are_not_served(small_data, cache_dir, capsys) -> None:
    # A cache written by code that did not check samples (trimming off, so NaN got through)
    # must end the same way as a fresh run: the clip is named.
    import soundfile as sf

    cfg = dataclasses.replace(CFG, trim_db=None)
    bad = small_data / "6_nicolas_1.wav"
    x = read_wav(bad)
    x[10] = float("nan")
    float_wav(bad, x)
    files = list_wavs(small_data)
    unchecked = [clip_features(sf.read(f, dtype="float32")[0], cfg) for f in files]
    path = cache_dir / "features" / f"mfcc-{features.cache_key(files, cfg)}.safetensors"
    features._write_cache(path, [f.name for f in files], unchecked, cfg)
    with pytest.raises(DataError, match=r"6_nicolas_1\.wav: 1 non-finite samples"):
        load_features(small_data, cfg, cache_dir)
    assert "non-finite features" in capsys.readouterr().err


def test_a_bug_while_reading_the_cache_is_not_hidden(small_data, cache_dir, monkeypatch) -> None:
    load_features(small_data, CFG, cache_dir)

    def buggy(*args):
        raise TypeError("a bug, not a corrupt file")

    monkeypatch.setattr(features, "_read_cache", buggy)
    with pytest.raises(TypeError, match="a bug"):
        load_features(small_data, CFG, cache_dir)
