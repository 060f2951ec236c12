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
from fsdd.schema import AugmentConfig, Corpus, FeatureConfig
from fsdd.splits import Split, clip_label, make_split

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


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of clips of similar length, in random order.

    Hand-written because torch has no length-bucketing sampler; clip lengths range
    from 0.14 s to 2.28 s, so random batches would run the LSTM mostly over padding.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int, variants: int = 1):
        """`variants` > 1: `lengths` holds that many versions of each clip, version v of clip i
        at index v * n + i; an epoch draws one version of every clip at random."""
        self.lengths, self.batch_size, self.shuffle, self.variants = list(lengths), batch_size, shuffle, variants
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.lengths) // self.variants
        if self.shuffle:
            # Sort by length after a random permutation (ties broken randomly), chunk, shuffle chunks.
            perm = torch.randperm(n, generator=self.generator).tolist()
            if self.variants > 1:
                pick = torch.randint(0, self.variants, (n,), generator=self.generator).tolist()
                perm = [pick[i] * n + i for i in perm]
            order = sorted(perm, key=lambda i: self.lengths[i])
        else:
            order = sorted(range(n), key=lambda i: self.lengths[i])
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
        return iter(batches)

    def __len__(self) -> int:
        return (len(self.lengths) // self.variants + self.batch_size - 1) // self.batch_size


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
MEMO_SIZE = 12  # feature sets kept per process: a worker meets a few front ends, each with its variants


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
    clips: ClipList, features: FeatureConfig, cache_dir: str | Path | None = None, variant: Variant | None = None
) -> list[torch.Tensor]:
    """CMVN'd MFCCs of every clip of `clips`, corpus by corpus (cmvn_features), in clip order."""
    out: list[torch.Tensor] = []
    for corpus, span in zip(clips.corpora, clips.spans, strict=True):
        out += cmvn_features(corpus.path, features, cache_dir, variant, list(clips.files[span.start : span.stop]))[1]
    return out


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
    ):
        """`data`: a recordings folder or corpora (fsdd.corpora.as_corpora); `split`: an
        fsdd.schema.SplitName; `folds`: the speaker protocol's fold count (for `fold:K/N`)."""
        super().__init__()
        self.corpora, self.split_kind, self.seed, self.test_speaker = as_corpora(data), split, seed, test_speaker
        self.features = features or FeatureConfig()
        self.batch_size, self.channel_drop, self.frame_drop = batch_size, channel_drop, frame_drop
        self.cache_dir, self.folds = cache_dir, folds
        self.augment = augment or AugmentConfig()
        self.split: Split | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        self.clips = list_clips(self.corpora)
        self.names = list(self.clips.keys)
        feats = corpus_features(self.clips, self.features, self.cache_dir)
        # Identifies the data and features, for caches keyed by them (e.g. float parents).
        self.data_key = cache_key(list(self.clips.files), self.features)
        self.split = make_split(
            self.names, self.split_kind, self.seed, test_speaker=self.test_speaker, train_only=self.clips.train_only, folds=self.folds
        )
        # Global statistics from the training part only: a held-out speaker never shapes them.
        train_frames = torch.cat([feats[i] for i in self.split.train])
        self.mean = train_frames.mean(0)
        self.std = train_frames.std(0).clamp_min(1e-5)
        labels = [clip_label(n) for n in self.names]
        norm = normalize(feats, self.mean, self.std)
        parts = (("train", self.split.train), ("val", self.split.val), ("test", self.split.test))
        self.sets = {part: Clips([norm[i] for i in idx], [labels[i] for i in idx]) for part, idx in parts if idx}
        # What a model's predictions cover: the test part, or, without one (`all`: a refit on every
        # speaker), the real training clips (synthetic voices are never scored).
        self.scored = self.split.test or tuple(i for i in self.split.train if not self.clips.train_only[i])
        if not self.split.test:
            self.sets["scored"] = Clips([norm[i] for i in self.scored], [labels[i] for i in self.scored])
        # Augmented versions of the training clips (cached like the features), normalized with
        # the statistics of the real clips: the deployed model sees only real ones.
        extra = variants(self.augment)
        if extra:
            train = list(self.split.train)
            versions = [[norm[i] for i in train]]
            for v in extra:
                vf = corpus_features(self.clips, self.features, self.cache_dir, v)
                versions.append(normalize([vf[i] for i in train], self.mean, self.std))
            flat = [f for version in versions for f in version]
            self.train_versions = Clips(flat, [labels[i] for i in train] * len(versions))
        else:
            self.train_versions = self.sets["train"]
        self.n_versions = 1 + len(extra)

    @property
    def has_val(self) -> bool:
        """False for `loso:NAME` and `all`: the epoch is then fixed by the schedule (the last)."""
        return "val" in self.sets

    def loader(self, part: str, train: bool = False, batch_size: int | None = None) -> DataLoader:
        """Batches of one part ("train", "val", "test"); augmented and shuffled only if `train`."""
        augmented = part == "train" and train
        ds = self.train_versions if augmented else self.sets[part]
        versions = self.n_versions if augmented else 1
        sampler = BucketBatchSampler(ds.lengths.tolist(), batch_size or self.batch_size, train, self.seed, versions)
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
