"""Tests for fsdd.datamodule: padding that does not leak, train-only statistics and augmentation,
and the length-bucketing batch sampler."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from fsdd.audio import parse_name
from fsdd.augment import Variant, time_mask, variants
from fsdd.datamodule import Augment, BucketBatchSampler, Clips, FSDDDataModule
from fsdd.features import apply_cmvn, load_features
from fsdd.schema import AugmentConfig, FeatureConfig
from search.model import LSTMClassifier

CFG = FeatureConfig()


@pytest.fixture(scope="module")
def data(small_data_shared: Path, tmp_path_factory: pytest.TempPathFactory, torch_threads):
    """(data dir, cache dir, names, raw features) of the shared 240-clip subset, computed once."""
    cache = tmp_path_factory.mktemp("dm-cache")
    with torch_threads(1):
        names, feats = load_features(small_data_shared, CFG, cache)
    return small_data_shared, cache, names, feats


def make_dm(data, features: FeatureConfig = CFG, **kwargs) -> FSDDDataModule:
    data_dir, cache, _, _ = data
    dm = FSDDDataModule(data_dir, features, cache_dir=cache, batch_size=16, **kwargs)
    dm.setup("fit")
    return dm


def batches_with_indices(dm: FSDDDataModule, part: str, train: bool):
    """The loader's batches of one epoch, each with the split indices (into dm.names) of its clips."""
    loader = dm.loader(part, train=train)
    sampler = loader.batch_sampler
    state = sampler.generator.get_state()
    order = list(sampler)  # the batches the loader is about to draw...
    sampler.generator.set_state(state)  # ...replayed: the loader draws the same ones
    idx = getattr(dm.split, part)
    return list(zip([[idx[i] for i in b] for b in order], loader, strict=True))


def normalized(dm: FSDDDataModule, feats: list[torch.Tensor], i: int) -> torch.Tensor:
    return (feats[i] - dm.mean) / dm.std


# --- padding ----------------------------------------------------------------------------


def test_padding_does_not_leak_into_logits(data) -> None:
    _, _, names, feats = data
    # Clips of clearly different lengths, shortest and longest included.
    by_len = sorted(range(len(feats)), key=lambda i: len(feats[i]))
    pick = [by_len[0], by_len[len(by_len) // 3], by_len[2 * len(by_len) // 3], by_len[-1], by_len[5]]
    clips = Clips(feats, [parse_name(n)[0] for n in names])
    x, lengths, y = Augment()(clips.__getitems__(pick))
    assert len(set(lengths.tolist())) >= 4
    assert x.shape == (len(pick), max(lengths).item(), CFG.n_mfcc)
    for b, i in enumerate(pick):
        assert torch.equal(x[b, : lengths[b]], feats[i]) and not x[b, lengths[b] :].any()
    assert y.tolist() == [parse_name(names[i])[0] for i in pick]

    torch.manual_seed(0)
    model = LSTMClassifier(CFG.n_mfcc, 8).eval()
    with torch.no_grad():
        logits = model(x, lengths)
        for b, i in enumerate(pick):
            alone = model(feats[i][None], torch.tensor([len(feats[i])]))[0]
            torch.testing.assert_close(logits[b], alone, atol=1e-5, rtol=0)
        # Sensitivity: reading the padded batch at its last step (the manual study's bug) does
        # change the short clips' logits, so the check above would catch a leak.
        naive = model.fc(model.lstm(x)[:, -1])
        short = 0
        assert lengths[short] < x.shape[1]
        assert not torch.allclose(naive[short], logits[short], atol=1e-5)


# --- normalization ----------------------------------------------------------------------


def test_normalization_statistics_come_from_train_split_only(data) -> None:
    _, _, names, feats = data
    dm = make_dm(data)
    assert dm.names == names
    train = torch.cat([feats[i] for i in dm.split.train])
    torch.testing.assert_close(dm.mean, train.mean(0))
    torch.testing.assert_close(dm.std, train.std(0).clamp_min(1e-5))
    everything = torch.cat(feats)
    assert not torch.allclose(dm.mean, everything.mean(0), rtol=0, atol=1e-4)
    # The normalized training frames are standardized; the held-out ones only approximately.
    norm_train = torch.cat(dm.sets["train"].feats)
    torch.testing.assert_close(norm_train.mean(0), torch.zeros(CFG.n_mfcc), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm_train.std(0), torch.ones(CFG.n_mfcc), atol=1e-4, rtol=0)


# --- augmentation -----------------------------------------------------------------------


@pytest.mark.parametrize("part", ["val", "test"])
def test_eval_loaders_are_not_augmented(data, part: str) -> None:
    _, _, names, feats = data
    dm = make_dm(data, channel_drop=0.5, frame_drop=0.5)
    seen = []
    for idx, (x, lengths, y) in batches_with_indices(dm, part, train=False):
        assert lengths.tolist() == [len(feats[i]) for i in idx]
        assert y.tolist() == [parse_name(names[i])[0] for i in idx]
        for b, i in enumerate(idx):
            assert torch.equal(x[b, : lengths[b]], normalized(dm, feats, i)), names[i]
            assert not x[b, lengths[b] :].any()
        seen += idx
    assert sorted(seen) == list(getattr(dm.split, part))
    # The Lightning hooks return the same un-augmented loaders.
    hook = dm.val_dataloader() if part == "val" else dm.test_dataloader()
    for (x, _, _), (x2, _, _) in zip((b for _, b in batches_with_indices(dm, part, False)), hook, strict=True):
        assert torch.equal(x, x2)


def dropped(x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that `x` is `ref` with whole channels and whole frames zeroed; return those masks."""
    ch_dropped = (x == 0).all(0) & (ref != 0).any(0)
    fr_dropped = (x == 0).all(1) & (ref != 0).any(1)
    keep = ~ch_dropped[None, :] & ~fr_dropped[:, None]
    assert torch.equal(x, ref * keep), "augmentation zeroed something other than whole channels/frames"
    return ch_dropped, fr_dropped


def test_train_loader_drops_whole_channels_and_frames(data) -> None:
    _, _, _, feats = data
    dm = make_dm(data, channel_drop=0.5, frame_drop=0.5)
    n_ch = n_ch_dropped = n_fr = n_fr_dropped = 0
    seen = []
    for idx, (x, lengths, _) in batches_with_indices(dm, "train", train=True):
        for b, i in enumerate(idx):
            ch, fr = dropped(x[b, : lengths[b]], normalized(dm, feats, i))
            n_ch, n_ch_dropped = n_ch + len(ch), n_ch_dropped + int(ch.sum())
            n_fr, n_fr_dropped = n_fr + len(fr), n_fr_dropped + int(fr.sum())
        seen += idx
    assert sorted(seen) == list(dm.split.train)
    assert 0.4 < n_ch_dropped / n_ch < 0.6, n_ch_dropped / n_ch
    assert 0.4 < n_fr_dropped / n_fr < 0.6, n_fr_dropped / n_fr


def test_train_loader_without_augmentation_is_exact(data) -> None:
    _, _, _, feats = data
    dm = make_dm(data, channel_drop=0.0, frame_drop=0.0)
    for idx, (x, lengths, _) in batches_with_indices(dm, "train", train=True):
        for b, i in enumerate(idx):
            assert torch.equal(x[b, : lengths[b]], normalized(dm, feats, i))


def test_augmentation() -> None:
    feats = [torch.ones(n, 13) for n in (30, 50, 70, 90, 10)]
    batch = Clips(feats, [3] * 5).__getitems__([0, 1, 2, 3])
    x0, lengths, y = Augment()(batch)
    assert torch.equal(x0, torch.nn.utils.rnn.pad_sequence(feats[:4], batch_first=True))
    assert lengths.tolist() == [30, 50, 70, 90] and y.tolist() == [3] * 4

    x, _, _ = Augment(0.5, 0.5, torch.Generator().manual_seed(1))(batch)
    for b, n in enumerate(lengths.tolist()):
        ch, fr = dropped(x[b, :n], x0[b, :n])
        assert ch.any() and fr.any() and not ch.all() and not fr.all()
    again, _, _ = Augment(0.5, 0.5, torch.Generator().manual_seed(1))(batch)
    assert torch.equal(x, again)  # reproducible from the generator

    only_ch, _, _ = Augment(0.5, 0.0, torch.Generator().manual_seed(2))(batch)
    for b, n in enumerate(lengths.tolist()):
        ch, fr = dropped(only_ch[b, :n], x0[b, :n])
        assert not fr.any()


# --- bucketing sampler ------------------------------------------------------------------


def check_epoch(batches: list[list[int]], lengths: list[int], batch_size: int) -> None:
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths))), "every index exactly once per epoch"
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert sum(len(b) < batch_size for b in batches) <= 1
    # Buckets: the batches' length ranges do not interleave.
    ranges = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False))


def test_bucket_sampler_covers_each_index_once_and_shuffles() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(10, 300, (1001,), generator=g).tolist()
    sampler = BucketBatchSampler(lengths, 32, shuffle=True, seed=7)
    epochs = [list(sampler) for _ in range(3)]
    for batches in epochs:
        assert len(batches) == len(sampler) == 32  # ceil(1001 / 32)
        check_epoch(batches, lengths, 32)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2], "train batches must be reshuffled every epoch"
    assert [list(b) for b in BucketBatchSampler(lengths, 32, True, seed=7)] == epochs[0]  # reproducible

    fixed = BucketBatchSampler(lengths, 32, shuffle=False, seed=7)
    e1, e2 = list(fixed), list(fixed)
    check_epoch(e1, lengths, 32)
    assert e1 == e2
    assert [i for b in e1 for i in b] == sorted(range(len(lengths)), key=lambda i: lengths[i])


def test_datamodule_train_loader_reshuffles_between_epochs(data) -> None:
    dm = make_dm(data)
    loader = dm.train_dataloader()
    first = [y.tolist() for _, _, y in loader]
    second = [y.tolist() for _, _, y in loader]
    assert first != second
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == sorted(dm.sets["train"].labels)
    val = dm.val_dataloader()
    assert [y.tolist() for _, _, y in val] == [y.tolist() for _, _, y in val]  # val order is fixed


# --- the speaker protocol: folds, CMVN and audio variants -------------------------------


def test_fold_statistics_come_from_the_training_speakers_only(data) -> None:
    _, _, names, feats = data
    cfg = dataclasses.replace(CFG, cmvn="mean")  # (meanvar would make every mean 0)
    dm = make_dm(data, split="loso:george", features=cfg)
    assert not dm.has_val and "val" not in dm.sets
    george = {i for i, n in enumerate(names) if parse_name(n)[1] == "george"}
    assert set(dm.split.test) == george and not george & set(dm.split.train)
    cmvn = [apply_cmvn(f, "mean") for f in feats]
    train = torch.cat([cmvn[i] for i in dm.split.train])
    torch.testing.assert_close(dm.mean, train.mean(0))
    torch.testing.assert_close(dm.std, train.std(0).clamp_min(1e-5))
    # The held-out speaker's frames would move the statistics if they were used.
    everything = torch.cat(cmvn)
    assert not torch.allclose(dm.std, everything.std(0), rtol=0, atol=1e-3)


def test_cmvn_per_utterance() -> None:
    x = torch.randn(17, 13, dtype=torch.float64).float() * 5 + 3
    m = apply_cmvn(x, "mean")
    torch.testing.assert_close(m.mean(0), torch.zeros(13), atol=1e-5, rtol=0)
    torch.testing.assert_close(m, x - x.mean(0), atol=1e-5, rtol=0)
    mv = apply_cmvn(x, "meanvar")
    torch.testing.assert_close(mv.pow(2).mean(0), torch.ones(13), atol=1e-4, rtol=0)  # population variance 1
    assert torch.equal(apply_cmvn(x, "none"), x)
    one = apply_cmvn(torch.ones(1, 13), "meanvar")  # one frame: zero deviation, floored, not NaN
    assert torch.equal(one, torch.zeros(1, 13))


def test_audio_variants_train_only_and_cached(data, monkeypatch) -> None:
    data_dir, cache, names, feats = data
    aug = AugmentConfig(speeds=(0.9,), tempos=(1.2,), noise_snr_db=20.0)
    assert len(variants(aug)) == 2 * 2 * 2 - 1
    dm = make_dm(data, augment=aug, channel_drop=0.0, frame_drop=0.0)
    n = len(dm.split.train)
    (table, k), *synthetic = dm.pools
    assert table.shape == (n, 8) and k is None and not synthetic and len(dm.train_versions) == 8 * n
    # Evaluation parts hold the real clips only, unaugmented.
    for part in ("train", "val", "test"):
        assert len(dm.sets[part]) == len(getattr(dm.split, part))
    for idx, (x, lengths, _) in batches_with_indices(dm, "val", train=False):
        for b, i in enumerate(idx):
            assert torch.equal(x[b, : lengths[b]], normalized(dm, feats, i))
    # An epoch draws one version of every training clip, and versions vary between epochs.
    loader = dm.loader("train", train=True)
    epochs = [sorted(i for batch in loader.batch_sampler for i in batch) for _ in range(2)]
    for picked in epochs:
        assert len(picked) == n and sorted(i % n for i in picked) == list(range(n))
    assert epochs[0] != epochs[1] and max(epochs[0]) >= n
    # Variants are cached: a second DataModule computes nothing.
    import fsdd.features

    def boom(*a, **k):
        raise AssertionError("recomputed a cached variant")

    monkeypatch.setattr(fsdd.features, "clip_features", boom)
    dm2 = make_dm(data, augment=aug, channel_drop=0.0, frame_drop=0.0)
    assert all(torch.equal(a, b) for a, b in zip(dm2.train_versions.feats, dm.train_versions.feats, strict=True))


def test_variants_change_the_clip() -> None:
    x = np.sin(np.linspace(0, 400, 4000)).astype(np.float32)
    fast = Variant(speed=1.25).speed_up(x, 8000)
    assert abs(len(fast) - 3200) <= 1
    noisy = Variant(snr_db=10.0).add_noise(x, "a.wav")
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((noisy - x).astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 0.5
    assert np.array_equal(noisy, Variant(snr_db=10.0).add_noise(x, "a.wav"))  # reproducible (cached)
    assert not np.array_equal(noisy, Variant(snr_db=10.0).add_noise(x, "b.wav"))


def test_time_masks_zero_spans_within_each_clip() -> None:
    x = torch.ones(4, 30, 3)
    lengths = torch.tensor([30, 20, 10, 5])
    out = time_mask(x, lengths, masks=2, width=4, generator=torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(2)
    assert zeroed.sum(1).le(8).all() and zeroed.any()
    for b, n in enumerate(lengths.tolist()):
        assert not zeroed[b, n + 4 :].any()  # masks start within the clip
