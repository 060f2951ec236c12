"""Train/validation/test splits, reproducible from a seed and named by a hash of their file lists."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fsdd.audio import parse_name
from fsdd.errors import DataError

SPLIT_KINDS = ("random", "official", "speaker:NAME")


@dataclass(frozen=True)
class Split:
    kind: str
    seed: int
    train: tuple[int, ...]  # indices into the sorted file list
    val: tuple[int, ...]
    test: tuple[int, ...]
    hash: str


def _stratified(idx: Sequence[int], labels: Sequence[int], frac: float, rng: np.random.Generator) -> tuple[list, list]:
    """Take `frac` of each label's indices (rounded, at least one if a label has 3+ clips)."""
    taken, rest = [], []
    for label in sorted(set(labels[i] for i in idx)):
        members = np.array([i for i in idx if labels[i] == label])
        rng.shuffle(members)
        k = int(round(len(members) * frac))
        if k == 0 and len(members) >= 3 and frac > 0:
            k = 1
        taken += members[:k].tolist()
        rest += members[k:].tolist()
    return taken, rest


def split_hash(names: Sequence[str], train: Sequence[int], val: Sequence[int], test: Sequence[int]) -> str:
    h = hashlib.sha256()
    for part in (train, val, test):
        h.update("\n".join(sorted(names[i] for i in part)).encode() + b"\0")
    return h.hexdigest()[:12]


def make_split(names: Sequence[str], kind: str = "random", seed: int = 0, val_frac: float = 0.15, test_frac: float = 0.15) -> Split:
    """Split file names into train/val/test.

    - `random`: stratified by digit, 70/15/15 (the manual study's protocol);
    - `official`: takes 0-4 are the test set (the dataset's convention), validation is a
      stratified `val_frac` of the rest;
    - `speaker:NAME`: all of NAME's clips are the test set, validation as above.
    """
    parsed = [parse_name(n) for n in names]
    labels = [p[0] for p in parsed]
    rng = np.random.default_rng(seed)
    every = list(range(len(names)))
    if kind == "random":
        test, rest = _stratified(every, labels, test_frac, rng)
        val, train = _stratified(rest, labels, val_frac / (1 - test_frac), rng)
    elif kind == "official":
        test = [i for i in every if parsed[i][2] < 5]
        val, train = _stratified([i for i in every if parsed[i][2] >= 5], labels, val_frac, rng)
    elif kind.startswith("speaker:"):
        speaker = kind.split(":", 1)[1]
        speakers = sorted({p[1] for p in parsed})
        if speaker not in speakers:
            raise DataError(f"unknown speaker {speaker!r} in split {kind!r}; speakers here: {', '.join(speakers)}")
        test = [i for i in every if parsed[i][1] == speaker]
        val, train = _stratified([i for i in every if parsed[i][1] != speaker], labels, val_frac, rng)
    else:
        raise DataError(f"unknown split {kind!r}; use one of: {', '.join(SPLIT_KINDS)}")
    if not train or not val or not test:
        raise DataError(f"split {kind!r} of {len(names)} clips leaves an empty train, validation or test set")
    train, val, test = sorted(train), sorted(val), sorted(test)
    return Split(kind, seed, tuple(train), tuple(val), tuple(test), split_hash(names, train, val, test))
