"""Train/validation/test splits and held-out-speaker folds, reproducible from a seed and named by a hash of their file lists."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fsdd.audio import parse_name
from fsdd.errors import DataError
from fsdd.schema import SPEAKERS, SplitName


@dataclass(frozen=True)
class Split:
    """Indices into the sorted clip list. `val` is empty for held-out-speaker folds and `all` (their
    epoch is fixed by the schedule), `test` is empty for `all` (everything trains). Training-only
    clips (synthetic voices) are in `train` of every split, never in `val` or `test`."""

    kind: str
    seed: int
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    hash: str
    test_speaker: str | None = None  # kept out of every part (the search's --test-speaker)


def clip_speaker(key: str) -> str:
    """The speaker of a clip key: `7_jackson_32.wav` -> "jackson"; with several corpora a key is
    `corpus/file` and its speaker `corpus/name`, so two corpora may each have a "jack"."""
    corpus, _, name = key.rpartition("/")
    speaker = parse_name(name)[1]
    return f"{corpus}/{speaker}" if corpus else speaker


def clip_label(key: str) -> int:
    return parse_name(key.rpartition("/")[2])[0]


def speakers_of(names: Sequence[str], train_only: Sequence[bool] | None = None) -> list[str]:
    """The real speakers of a clip list (training-only ones left out), sorted: the order of the folds."""
    return sorted({clip_speaker(n) for i, n in enumerate(names) if not (train_only and train_only[i])})


def resolve_speaker(name: str, speakers: Sequence[str], what: str) -> str:
    """`name` as one of `speakers`: exactly, or a bare name that one corpus holds (`george` for
    `fsdd/george`). DataError listing the speakers otherwise."""
    if name in speakers:
        return name
    matches = [s for s in speakers if s.rpartition("/")[2] == name]
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(speakers[:30]) + (f" and {len(speakers) - 30} more" if len(speakers) > 30 else "")
    if matches:
        raise DataError(f"speaker {name!r} in {what} is ambiguous: {', '.join(matches)}; give it as CORPUS/NAME")
    raise DataError(f"unknown speaker {name!r} in {what}; speakers here: {shown}")


def fold_groups(speakers: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    """The held-out speakers of each fold (docs/artifact.md section 6): one speaker per fold when
    there are at most `folds` of them (leave one speaker out); otherwise the speakers, sorted, are
    permuted by numpy.random.default_rng(seed).permutation and dealt in turn to `folds` groups
    (speaker j of the permutation to group j mod folds), each group then sorted. Every speaker is
    held out exactly once; group sizes differ by at most one."""
    ordered = sorted(speakers)
    if len(ordered) <= folds:
        return [[s] for s in ordered]
    perm = np.random.default_rng(seed).permutation(len(ordered))
    groups: list[list[str]] = [[] for _ in range(folds)]
    for j, i in enumerate(perm):
        groups[j % folds].append(ordered[int(i)])
    return [sorted(g) for g in groups]


def fold_kinds(
    names: Sequence[str], test_speaker: str | None = None, folds: int = 6, seed: int = 0, train_only: Sequence[bool] | None = None
) -> list[str]:
    """The split of every fold of the speaker protocol, in order: `loso:NAME` per real speaker
    (besides `test_speaker`) when there are at most `folds`, else `fold:K/N` (fold_groups). DataError
    if a test speaker is unknown or fewer than two real speakers remain (a fold needs one speaker
    to hold out and at least one to train on)."""
    speakers = speakers_of(names, train_only)
    if test_speaker is not None:
        speakers.remove(resolve_speaker(test_speaker, speakers, "--test-speaker"))
    if len(speakers) < 2:
        left = ", ".join(speakers) or "none"
        raise DataError(f"the speaker protocol needs clips of at least two real speakers besides any test speaker; this data has: {left}")
    groups = fold_groups(speakers, folds, seed)
    if all(len(g) == 1 for g in groups):
        return [f"loso:{g[0]}" for g in groups]
    return [f"fold:{k}/{len(groups)}" for k in range(1, len(groups) + 1)]


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
    """12 hex digits of SHA-256 over the sorted clip names of each part (docs/artifact.md section 6)."""
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
    train_only: Sequence[bool] | None = None,
    folds: int = 6,
) -> Split:
    """Split clip keys into train/val/test (docs/artifact.md, section 6, specifies each).

    - `random`: stratified by digit, 70/15/15 (the manual study's protocol);
    - `official`: takes 0-4 are the test set (the dataset's convention), validation is a
      stratified `val_frac` of the rest;
    - `speaker:NAME`: all of NAME's clips are the test set, validation as above;
    - `loso:NAME`: one held-out-speaker fold: NAME's clips are the test set, every other
      speaker trains, no validation (the epoch is fixed by the schedule);
    - `fold:K/N`: the same with the K-th group of fold_groups(real speakers, N, seed) held out;
    - `all`: every clip trains (the refit of a speaker-protocol model);
    - `eval`: every clip is the test set (a trained model scored on recordings it never saw).
    `test_speaker`: that speaker's clips are in no part at all (kept out of a whole search).
    `train_only[i]`: clip i (a synthetic voice) only ever trains; the split hash covers the
    real clips only, so that the split can be rebuilt from the real corpora alone.
    """
    try:
        name = SplitName.parse(kind)
    except ValueError as e:
        raise DataError(str(e)) from None
    if name.kind == SPEAKERS:
        raise DataError(f"{SPEAKERS} is every fold in turn (fsdd.splits.fold_kinds), not one split")
    only = list(train_only) if train_only is not None else [False] * len(names)
    labels = [clip_label(n) for n in names]
    owners = [clip_speaker(n) for n in names]
    rng = np.random.default_rng(seed)
    speakers = speakers_of(names, only)
    real = [i for i in range(len(names)) if not only[i]]
    synthetic = [i for i in range(len(names)) if only[i]]
    if test_speaker is not None:
        test_speaker = resolve_speaker(test_speaker, speakers, "test_speaker")
        real = [i for i in real if owners[i] != test_speaker]
    val: list[int] = []
    test: list[int] = []
    if name.kind == "random":
        test, rest = _stratified(real, labels, test_frac, rng)
        val, train = _stratified(rest, labels, val_frac / (1 - test_frac), rng)
    elif name.kind == "official":
        test = [i for i in real if parse_name(names[i].rpartition("/")[2])[2] < 5]
        val, train = _stratified([i for i in real if parse_name(names[i].rpartition("/")[2])[2] >= 5], labels, val_frac, rng)
    elif name.kind in ("speaker", "loso", "fold"):
        if name.kind == "fold":
            k, n = name.fold
            pool = [s for s in speakers if s != test_speaker]
            groups = fold_groups(pool, n, seed)
            if len(groups) != n:
                raise DataError(f"split {kind!r}: {len(pool)} real speakers make {len(groups)} folds, not {n}")
            held = set(groups[k - 1])
        else:
            speaker = resolve_speaker(name.speaker, speakers, f"split {kind!r}")
            if speaker == test_speaker:
                raise DataError(f"split {kind!r} holds out the test speaker {test_speaker!r}, whose clips are kept out of everything")
            held = {speaker}
        test = [i for i in real if owners[i] in held]
        rest = [i for i in real if owners[i] not in held]
        if name.kind == "speaker":
            val, train = _stratified(rest, labels, val_frac, rng)
        else:
            train = rest
    elif name.kind == "eval":
        test, train = real, []
    else:  # all
        train = real
    if (name.kind != "eval" and not train) or (name.has_val and not val) or (name.kind != "all" and not test):
        raise DataError(f"split {kind!r} of {len(real)} clips leaves an empty train, validation or test set")
    h = split_hash(names, train, val, test)
    train, val, test = sorted(train + (synthetic if train else [])), sorted(val), sorted(test)
    return Split(kind, seed, tuple(train), tuple(val), tuple(test), h, test_speaker)
