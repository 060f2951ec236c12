"""Tests for fsdd.splits on the real FSDD file names (names only: no audio is read)."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from fsdd.audio import parse_name
from fsdd.errors import DataError
from fsdd.splits import Split, fold_kinds, make_split

SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]


@pytest.fixture(scope="module")
def names(fsdd_dir: Path) -> list[str]:
    names = sorted(n for n in os.listdir(fsdd_dir) if n.endswith(".wav"))
    if len(names) != 3000:
        pytest.skip(f"{fsdd_dir} holds {len(names)} wavs, not the full 3000-clip FSDD")
    return names


def check_partition(split: Split, n: int) -> None:
    parts = (split.train, split.val, split.test)
    for part in parts:
        assert list(part) == sorted(set(part)), "indices must be sorted and unique"
        assert all(0 <= i < n for i in part)
    train, val, test = map(set, parts)
    assert not train & val and not train & test and not val & test, "parts overlap"
    assert train | val | test == set(range(n)), "parts do not cover every clip"


def digits(names: list[str], idx) -> Counter:
    return Counter(parse_name(names[i])[0] for i in idx)


def test_random_split(names: list[str]) -> None:
    s = make_split(names, "random", seed=0)
    check_partition(s, len(names))
    assert (len(s.train), len(s.val), len(s.test)) == (2100, 450, 450)
    assert digits(names, s.test) == {d: 45 for d in range(10)}
    assert digits(names, s.val) == {d: 45 for d in range(10)}
    assert digits(names, s.train) == {d: 210 for d in range(10)}
    assert s.kind == "random" and s.seed == 0


def test_official_split(names: list[str]) -> None:
    s = make_split(names, "official", seed=0)
    check_partition(s, len(names))
    assert set(s.test) == {i for i, n in enumerate(names) if parse_name(n)[2] < 5}
    assert len(s.test) == 10 * 6 * 5
    assert all(parse_name(names[i])[2] >= 5 for i in s.train + s.val)
    per_digit = digits(names, s.val)
    assert set(per_digit) == set(range(10)) and len(set(per_digit.values())) == 1, per_digit  # stratified
    assert abs(len(s.val) - 0.15 * 2700) <= 10


@pytest.mark.parametrize("speaker", SPEAKERS)
def test_speaker_split(names: list[str], speaker: str) -> None:
    s = make_split(names, f"speaker:{speaker}", seed=0)
    check_partition(s, len(names))
    assert {parse_name(names[i])[1] for i in s.test} == {speaker}
    assert set(s.test) == {i for i, n in enumerate(names) if parse_name(n)[1] == speaker}
    assert all(parse_name(names[i])[1] != speaker for i in s.train + s.val)
    per_digit = digits(names, s.val)
    assert set(per_digit) == set(range(10)) and len(set(per_digit.values())) == 1, per_digit


@pytest.mark.parametrize("kind", ["random", "official", "speaker:theo"])
def test_reproducible_and_seed_dependent(names: list[str], kind: str) -> None:
    a, b = make_split(names, kind, seed=3), make_split(names, kind, seed=3)
    assert a == b and a.hash == b.hash
    assert len(a.hash) == 12
    c = make_split(names, kind, seed=4)
    assert c.hash != a.hash
    assert c.val != a.val


def test_hash_names_the_file_lists(names: list[str]) -> None:
    s = make_split(names, "random", seed=0)
    # Same seed on a different file list (one clip fewer): a different split, a different hash.
    fewer = make_split(names[1:], "random", seed=0)
    assert fewer.hash != s.hash
    # Different kinds never share a hash.
    hashes = {make_split(names, k, seed=0).hash for k in ["random", "official", "speaker:george"]}
    assert len(hashes) == 3


def test_unknown_kind(names: list[str]) -> None:
    with pytest.raises(DataError) as e:
        make_split(names, "bogus")
    msg = str(e.value)
    assert "bogus" in msg and "random" in msg and "official" in msg and "speaker:" in msg


def test_unknown_speaker_lists_speakers(names: list[str]) -> None:
    with pytest.raises(DataError) as e:
        make_split(names, "speaker:nobody")
    msg = str(e.value)
    assert "nobody" in msg
    for speaker in SPEAKERS:
        assert speaker in msg


def test_too_few_clips_is_a_data_error() -> None:
    with pytest.raises(DataError, match="empty"):
        make_split(["0_a_0.wav", "1_a_0.wav"], "random")


# --- the speaker protocol: leave-one-speaker-out folds -------------------------------------


def speakers_in(names: list[str], idx) -> set[str]:
    return {parse_name(names[i])[1] for i in idx}


@pytest.mark.parametrize("test_speaker", [None, "theo"])
def test_no_fold_has_a_speaker_in_both_training_and_held_out(names: list[str], test_speaker: str | None) -> None:
    kinds = fold_kinds(names, test_speaker)
    assert kinds == [f"loso:{s}" for s in SPEAKERS if s != test_speaker]
    held_out = []
    for kind in kinds:
        s = make_split(names, kind, seed=0, test_speaker=test_speaker)
        speaker = kind.split(":")[1]
        assert speakers_in(names, s.test) == {speaker}
        assert speaker not in speakers_in(names, s.train) and not s.val
        assert speakers_in(names, s.train) == set(SPEAKERS) - {speaker, test_speaker}
        assert set(s.test) | set(s.train) == {i for i, n in enumerate(names) if parse_name(n)[1] != test_speaker}
        held_out += s.test
    # Pooled over the folds, every clip (but the test speaker's) is held out exactly once.
    assert sorted(held_out) == [i for i, n in enumerate(names) if parse_name(n)[1] != test_speaker]


def test_all_split_trains_on_everything_but_the_test_speaker(names: list[str]) -> None:
    s = make_split(names, "all", seed=0)
    assert s.train == tuple(range(len(names))) and not s.val and not s.test
    t = make_split(names, "all", seed=0, test_speaker="george")
    assert "george" not in speakers_in(names, t.train) and len(t.train) == 2500 and t.hash != s.hash
    # The refit with a test speaker is the test speaker's fold: trained on the other five, tested on it.
    r = make_split(names, "loso:george", seed=0)
    assert r.train == t.train and speakers_in(names, r.test) == {"george"}


def test_speaker_protocol_bad_input_is_one_clear_line(names: list[str]) -> None:
    with pytest.raises(DataError, match="unknown speaker 'bob'.*george"):
        fold_kinds(names, "bob")
    with pytest.raises(DataError, match="unknown speaker 'bob'"):
        make_split(names, "loso:bob")
    with pytest.raises(DataError, match="test speaker 'theo'"):
        make_split(names, "loso:theo", test_speaker="theo")
    one = [n for n in names if parse_name(n)[1] == "theo"]
    with pytest.raises(DataError, match="at least two real speakers.*theo"):
        fold_kinds(one)
    two = [n for n in names if parse_name(n)[1] in ("theo", "lucas")]
    with pytest.raises(DataError, match="at least two real speakers"):
        fold_kinds(two, test_speaker="lucas")
    assert fold_kinds(two) == ["loso:lucas", "loso:theo"]


@pytest.mark.parametrize(
    "name, reason",
    [
        ("fold:0/6", "1 <= K <= N"),
        ("fold:7/6", "1 <= K <= N"),
        ("fold:1/0", "1 <= K <= N"),
        ("fold:01/06", "without leading zeros"),  # one spelling per split: the name is in hashes and artifacts
        ("loso:fsdd/", "NAME or CORPUS/NAME"),
        ("speaker:", "cannot be in a file name"),
    ],
)
def test_a_bad_split_name_says_why(name, reason):
    """(Breaker, round 4) the parser's reason was replaced by a bare 'unknown split'."""
    with pytest.raises(DataError, match=re.escape(reason)):
        make_split([f"{d}_a_{t}.wav" for d in range(10) for t in range(5)], name)
