"""Train/validation/test splits and leave-one-speaker-out folds, reproducible from a seed and named by a hash of their file lists."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fsdd.audio import parse_name
from fsdd.errors import DataError

SPLIT_KINDS = ("random", "official", "speaker:NAME", "loso:NAME", "all")
PROTOCOL_SPEAKERS = "speakers"  # not a split: every `loso:NAME` fold in turn (fsdd.splits.fold_kinds)


@dataclass(frozen=True)
class Split:
    """Indices into the sorted file list. `val` is empty for `loso:NAME` and `all` (their
    epoch is fixed by the schedule), `test` is empty for `all` (everything trains)."""

    kind: str
    seed: int
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    hash: str
    test_speaker: str | None = None  # kept out of every part (the search's --test-speaker)


def speakers_of(names: Sequence[str]) -> list[str]:
    """The speakers of a file list, sorted (the order of the folds)."""
    return sorted({parse_name(n)[1] for n in names})


def _known_speaker(speaker: str, speakers: Sequence[str], what: str) -> None:
    if speaker not in speakers:
        raise DataError(f"unknown speaker {speaker!r} in {what}; speakers here: {', '.join(speakers)}")


def fold_kinds(names: Sequence[str], test_speaker: str | None = None) -> list[str]:
    """`loso:NAME` for every speaker of `names` except `test_speaker`, in name order.
    DataError if a test speaker is unknown or fewer than two speakers remain (a fold needs
    one speaker to hold out and at least one to train on)."""
    speakers = speakers_of(names)
    if test_speaker is not None:
        _known_speaker(test_speaker, speakers, "--test-speaker")
        speakers.remove(test_speaker)
    if len(speakers) < 2:
        left = ", ".join(speakers) or "none"
        raise DataError(f"the speaker protocol needs clips of at least two speakers besides any test speaker; this data has: {left}")
    return [f"loso:{s}" for s in speakers]


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


def make_split(
    names: Sequence[str],
    kind: str = "random",
    seed: int = 0,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    test_speaker: str | None = None,
) -> Split:
    """Split file names into train/val/test (docs/artifact.md, section 6, specifies each).

    - `random`: stratified by digit, 70/15/15 (the manual study's protocol);
    - `official`: takes 0-4 are the test set (the dataset's convention), validation is a
      stratified `val_frac` of the rest;
    - `speaker:NAME`: all of NAME's clips are the test set, validation as above;
    - `loso:NAME`: one leave-one-speaker-out fold: NAME's clips are the test set, every other
      speaker trains, no validation (the epoch is fixed by the schedule);
    - `all`: every clip trains (the refit of a speaker-protocol model).
    `test_speaker`: that speaker's clips are in no part at all (kept out of a whole search).
    """
    parsed = [parse_name(n) for n in names]
    labels = [p[0] for p in parsed]
    rng = np.random.default_rng(seed)
    speakers = speakers_of(names)
    every = list(range(len(names)))
    if test_speaker is not None:
        _known_speaker(test_speaker, speakers, "test_speaker")
        every = [i for i in every if parsed[i][1] != test_speaker]
    val: list[int] = []
    test: list[int] = []
    if kind == "random":
        test, rest = _stratified(every, labels, test_frac, rng)
        val, train = _stratified(rest, labels, val_frac / (1 - test_frac), rng)
    elif kind == "official":
        test = [i for i in every if parsed[i][2] < 5]
        val, train = _stratified([i for i in every if parsed[i][2] >= 5], labels, val_frac, rng)
    elif kind.startswith(("speaker:", "loso:")):
        speaker = kind.split(":", 1)[1]
        _known_speaker(speaker, speakers, f"split {kind!r}")
        if speaker == test_speaker:
            raise DataError(f"split {kind!r} holds out the test speaker {test_speaker!r}, whose clips are kept out of everything")
        test = [i for i in every if parsed[i][1] == speaker]
        rest = [i for i in every if parsed[i][1] != speaker]
        if kind.startswith("speaker:"):
            val, train = _stratified(rest, labels, val_frac, rng)
        else:
            train = rest
    elif kind == "all":
        train = every
    else:
        raise DataError(f"unknown split {kind!r}; use one of: {', '.join(SPLIT_KINDS)} (or {PROTOCOL_SPEAKERS} for all loso folds)")
    needs_val, needs_test = not kind.startswith(("loso:", "all")), kind != "all"
    if not train or (needs_val and not val) or (needs_test and not test):
        raise DataError(f"split {kind!r} of {len(names)} clips leaves an empty train, validation or test set")
    train, val, test = sorted(train), sorted(val), sorted(test)
    return Split(kind, seed, tuple(train), tuple(val), tuple(test), split_hash(names, train, val, test), test_speaker)
