"""Lightning DataModule over cached MFCCs: per-utterance CMVN, train-only normalization and augmentation, padding-safe batches."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fsdd.audio import list_wavs
from fsdd.augment import Variant, time_mask, variants
from fsdd.corpora import ClipList, as_corpora, list_clips
from fsdd.features import apply_cmvn, cache_key, load_features
from fsdd.schema import AugmentConfig, Corpus, FeatureConfig, VoicesConfig
from fsdd.splits import Split, clip_label, make_split
from fsdd.synth import synthetic_corpus

N_CLASSES = 10


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # padded x (B, T, C), lengths (B,), labels (B,)


class Clips(Dataset):
    """One part's clips, zero-padded once into one tensor: a batch is then an index and a
    slice (`__getitems__`, which DataLoader prefers), not a per-batch pad of 32 tensors."""

    def __init__(self, feats: list[torch.Tensor], labels: list[int]):
        self.feats, self.labels = feats, labels
        self.lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        self.padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        self.targets = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.feats[i], self.labels[i]

    def __getitems__(self, idx: list[int]) -> Batch:
        """The clips `idx`, padded to the longest of them, with their true lengths and labels."""
        i = torch.tensor(idx, dtype=torch.long)
        lengths = self.lengths[i]
        return self.padded[i, : int(lengths.max())], lengths, self.targets[i]


Pool = tuple[torch.Tensor, int | None]  # (clips, versions) indices into a Clips; how many clips an epoch draws (None: all)


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of clips of similar length, in random order.

    Hand-written because torch has no length-bucketing sampler; clip lengths range
    from 0.14 s to 2.28 s, so random batches would run the LSTM mostly over padding.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int, pools: Sequence[Pool] | None = None):
        """`pools`: each a table (clips, versions) of indices into `lengths` and how many of its
        clips an epoch draws (None: all; else that many, drawn anew each epoch); every drawn clip
        comes in one of its versions, at random. Default: every index, one version, all."""
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        self.pools = list(pools) if pools is not None else [(torch.arange(len(self.lengths))[:, None], None)]
        self.generator = torch.Generator().manual_seed(seed)

    def _epoch(self) -> list[int]:
        if not self.shuffle:
            return [int(i) for table, _ in self.pools for i in table[:, 0]]
        chosen: list[int] = []
        for table, k in self.pools:
            perm = torch.randperm(len(table), generator=self.generator)[:k]
            pick = torch.randint(0, table.shape[1], (len(perm),), generator=self.generator)
            chosen += table[perm, pick].tolist()
        return [chosen[i] for i in torch.randperm(len(chosen), generator=self.generator).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        # Sort by length (after a random permutation: ties broken randomly), chunk, shuffle the chunks.
        order = sorted(self._epoch(), key=lambda i: self.lengths[i])
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
        return iter(batches)

    def __len__(self) -> int:
        n = sum(len(table) if k is None else min(k, len(table)) for table, k in self.pools)
        return (n + self.batch_size - 1) // self.batch_size


class Augment:
    """The DataLoader's collate step over `Clips.__getitems__` batches. With probabilities
    set (training only) it zeroes whole MFCC channels and whole frames of each clip, and
    applies SpecAugment time masks (fsdd.augment.time_mask)."""

    def __init__(
        self,
        channel_drop: float = 0.0,
        frame_drop: float = 0.0,
        generator: torch.Generator | None = None,
        time_masks: int = 0,
        time_mask_frames: int = 0,
    ):
        self.channel_drop, self.frame_drop, self.generator = channel_drop, frame_drop, generator
        self.time_masks, self.time_mask_frames = time_masks, time_mask_frames

    def __call__(self, batch: Batch) -> Batch:
        x, lengths, y = batch
        if self.channel_drop > 0 or self.frame_drop > 0:
            b, t, c = x.shape
            keep_ch = torch.rand(b, 1, c, generator=self.generator) >= self.channel_drop
            keep_fr = torch.rand(b, t, 1, generator=self.generator) >= self.frame_drop
            x = x * keep_ch * keep_fr
        if self.time_masks > 0:
            x = time_mask(x, lengths, self.time_masks, self.time_mask_frames, self.generator)
        return x, lengths, y


_MEMO: OrderedDict[tuple, tuple[list[str], list[torch.Tensor]]] = OrderedDict()
MEMO_SIZE = 40  # feature sets kept per process (one per corpus and variant): a worker meets a few front ends, each with its variants


def cmvn_features(
    data_dir: str | Path,
    features: FeatureConfig,
    cache_dir: str | Path | None = None,
    variant: Variant | None = None,
    files: list[Path] | None = None,
) -> tuple[list[str], list[torch.Tensor]]:
    """File names and per-utterance-CMVN'd MFCCs of every clip (fsdd.features.load_features, then
    apply_cmvn), kept in memory per process, keyed by the data's fingerprint: the six folds of a
    trial, and the trials that a reused Ray worker runs, read and normalise them once (measured:
    about 2 s per fold otherwise). The tensors are shared: callers must not modify them.
    `files`: `list_wavs(data_dir)`, if the caller has it already (it checks every name)."""
    key = (cache_key(files or list_wavs(data_dir), features, variant), str(cache_dir), features.cmvn)
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    names, feats = load_features(data_dir, features, cache_dir, variant)
    _MEMO[key] = names, [apply_cmvn(f, features.cmvn) for f in feats]
    while len(_MEMO) > MEMO_SIZE:
        _MEMO.popitem(last=False)
    return _MEMO[key]


def corpus_features(
    clips: ClipList, features: FeatureConfig, cache_dir: str | Path | None = None, variant: Variant | None = None, of: Sequence[int] = ()
) -> list[torch.Tensor]:
    """CMVN'd MFCCs of every clip of `clips` (or only of the clips `of`: only their corpora are
    computed), corpus by corpus (cmvn_features), in clip order."""
    out: list[torch.Tensor] = []
    wanted = set(of)
    for corpus, span in zip(clips.corpora, clips.spans, strict=True):
        if wanted and not wanted.intersection(span):
            out += [torch.empty(0)] * len(span)  # never read: a corpus none of `of` is in
            continue
        out += cmvn_features(corpus.path, features, cache_dir, variant, list(clips.files[span.start : span.stop]))[1]
    return [out[i] for i in of] if of else out


def synth_per_epoch(real: int, synthetic: int, share: float) -> int:
    """Synthetic clips an epoch draws so that they are `share` of its clips (at most all of them)."""
    return min(synthetic, round(real * share / (1 - share)))


def normalize(feats: list[torch.Tensor], mean: torch.Tensor, std: torch.Tensor) -> list[torch.Tensor]:
    """(f - mean) / std of every clip, computed on all frames at once (one op, not one per clip)."""
    if not feats:
        return []
    return list(torch.split((torch.cat(feats) - mean) / std, [len(f) for f in feats]))


class FSDDDataModule(pl.LightningDataModule):
    """FSDD as padded batches of normalized MFCCs. Statistics come from the training split only."""

    def __init__(
        self,
        data: str | Path | Corpus | Sequence[Corpus],
        features: FeatureConfig | None = None,
        split: str = "random",
        seed: int = 0,
        batch_size: int = 64,
        channel_drop: float = 0.0,
        frame_drop: float = 0.0,
        cache_dir: str | Path | None = None,
        test_speaker: str | None = None,
        augment: AugmentConfig | None = None,
        folds: int = 6,
        voices: VoicesConfig | None = None,
    ):
        """`data`: a recordings folder or corpora (fsdd.corpora.as_corpora); `split`: an
        fsdd.schema.SplitName; `folds`: the speaker protocol's fold count (for `fold:K/N`);
        `voices`: synthetic voices that join training (fsdd.synth), never held out or scored."""
        super().__init__()
        self.corpora, self.split_kind, self.seed, self.test_speaker = as_corpora(data), split, seed, test_speaker
        self.features = features or FeatureConfig()
        self.batch_size, self.channel_drop, self.frame_drop = batch_size, channel_drop, frame_drop
        self.cache_dir, self.folds = cache_dir, folds
        self.augment = augment or AugmentConfig()
        self.voices = voices or VoicesConfig()
        self.split: Split | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        synthetic = synthetic_corpus(self.voices, self.cache_dir)
        self.clips = list_clips(self.corpora + ((synthetic,) if synthetic else ()))
        self.names = list(self.clips.keys)
        feats = corpus_features(self.clips, self.features, self.cache_dir)
        # Identifies the data and features, for caches keyed by them (e.g. float parents).
        self.data_key = cache_key(list(self.clips.files), self.features)
        only = self.clips.train_only
        self.split = make_split(self.names, self.split_kind, self.seed, test_speaker=self.test_speaker, train_only=only, folds=self.folds)
        real = [i for i in self.split.train if not only[i]]
        # Statistics from the real training clips only: a held-out speaker never shapes them, and the
        # deployed model meets real recordings.
        train_frames = torch.cat([feats[i] for i in real])
        self.mean = train_frames.mean(0)
        self.std = train_frames.std(0).clamp_min(1e-5)
        labels = [clip_label(n) for n in self.names]
        norm = normalize(feats, self.mean, self.std)
        parts = (("train", self.split.train), ("val", self.split.val), ("test", self.split.test))
        self.sets = {part: Clips([norm[i] for i in idx], [labels[i] for i in idx]) for part, idx in parts if idx}
        # What a model's predictions cover: the test part, or, without one (`all`: a refit on every
        # speaker), the real training clips (synthetic voices are never scored).
        self.scored = self.split.test or tuple(real)
        if not self.split.test:
            self.sets["scored"] = Clips([norm[i] for i in self.scored], [labels[i] for i in self.scored])
        # Training pools: the real clips in their own and their augmented versions, every epoch; the
        # synthetic ones in their variants (voices.augment), a share of them per epoch.
        synth = [i for i in self.split.train if only[i]]
        flat: list[torch.Tensor] = []
        flat_labels: list[int] = []
        self.pools: list[Pool] = []
        for idx, versions, k in (
            (real, [None, *variants(self.augment)], None),
            (synth, variants(self.voices.augment) or [None], synth_per_epoch(len(real), len(synth), self.voices.share)),
        ):
            if not idx:
                continue
            table = []
            for v in versions:
                vf = norm if v is None else corpus_features(self.clips, self.features, self.cache_dir, v, idx)
                vf = vf if v is None else normalize(vf, self.mean, self.std)
                table.append(torch.arange(len(flat), len(flat) + len(idx)))
                flat += [vf[i] for i in idx] if v is None else vf
                flat_labels += [labels[i] for i in idx]
            self.pools.append((torch.stack(table, 1), k))
        self.train_versions = Clips(flat, flat_labels)

    @property
    def has_val(self) -> bool:
        """False for `loso:NAME` and `all`: the epoch is then fixed by the schedule (the last)."""
        return "val" in self.sets

    def loader(self, part: str, train: bool = False, batch_size: int | None = None) -> DataLoader:
        """Batches of one part ("train", "val", "test"); augmented and shuffled only if `train`."""
        augmented = part == "train" and train
        ds = self.train_versions if augmented else self.sets[part]
        pools = self.pools if augmented else None
        sampler = BucketBatchSampler(ds.lengths.tolist(), batch_size or self.batch_size, train, self.seed, pools)
        a = self.augment
        gen = torch.Generator().manual_seed(self.seed)
        collate = Augment(self.channel_drop, self.frame_drop, gen, a.time_masks, a.time_mask_frames) if train else Augment()
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self.loader("val", train=False) if self.has_val else []

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", train=False)
