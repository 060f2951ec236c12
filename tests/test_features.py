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
from fsdd.features import FeatureConfig, clip_features, load_features, prepare_samples

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
    t0 = time.perf_counter()
    names2, feats2 = load_features(fsdd_dir, CFG, cache_dir)  # warm: reads the cache only
    warm = time.perf_counter() - t0
    assert len(names) == 3000
    assert warm < 1.0, f"warm load took {warm:.2f} s (cold {cold:.1f} s)"
    assert names2 == names
    assert_same(feats2, feats)
