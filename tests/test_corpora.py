"""Several corpora in one run (issue 14): clip keys and speakers named by corpus, held-out-speaker
folds across corpora, training-only (synthetic) voices, and the artifacts they give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsdd.corpora import list_clips, parse_data_dir
from fsdd.errors import DataError
from fsdd.schema import Corpus
from fsdd.splits import clip_speaker, fold_groups, fold_kinds, make_split, speakers_of


def corpus(folder: Path, speakers: dict[str, int], rate: int = 8000, seed: int = 0) -> Path:
    """A folder of short tone clips: `speakers` {name: takes per digit}."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for speaker, takes in speakers.items():
        for digit in range(10):
            for take in range(takes):
                t = np.arange(int(0.3 * rate)) / rate
                x = 0.3 * np.sin(2 * np.pi * (200 + 40 * digit) * t) + 0.01 * rng.standard_normal(len(t))
                sf.write(folder / f"{digit}_{speaker}_{take}.wav", x.astype(np.float32), rate, subtype="PCM_16")
    return folder


@pytest.fixture
def two(tmp_path: Path) -> tuple[Corpus, Corpus]:
    a = corpus(tmp_path / "a", {"jack": 2, "anna": 2, "bo": 2})
    b = corpus(tmp_path / "b", {"jack": 2, "cy": 2}, seed=1)
    return Corpus("alpha", str(a)), Corpus("beta", str(b))


def test_two_corpora_can_each_have_a_jack(two):
    clips = list_clips(two)
    assert len(clips) == 100 and clips.keys[0].startswith("alpha/") and clips.keys[-1].startswith("beta/")
    speakers = speakers_of(list(clips.keys))
    assert speakers == ["alpha/anna", "alpha/bo", "alpha/jack", "beta/cy", "beta/jack"]  # corpus-qualified, unique
    assert len(set(clips.keys)) == len(clips)
    with pytest.raises(DataError, match="ambiguous.*alpha/jack, beta/jack"):
        make_split(list(clips.keys), "loso:jack")
    sp = make_split(list(clips.keys), "loso:cy")  # a bare name one corpus holds
    assert {clip_speaker(clips.keys[i]) for i in sp.test} == {"beta/cy"}
    one = list_clips(two[:1])
    assert one.keys[0] == "0_anna_0.wav"  # one real corpus: the file name, as before corpora existed


def test_bad_corpora_are_one_line(two, tmp_path):
    a, b = two
    with pytest.raises(DataError, match="the same folder twice"):
        list_clips([a, Corpus("again", str(Path(a.path) / "."))])
    with pytest.raises(DataError, match="two corpora named 'alpha'"):
        list_clips([a, Corpus("alpha", b.path)])
    fast = Corpus("fast", str(corpus(tmp_path / "fast", {"zed": 1}, rate=16000)))
    with pytest.raises(DataError, match="different sample rates.*fast at 16000 Hz.*resample corpus 'fast'"):
        list_clips([a, fast])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .wav files"):
        list_clips([a, Corpus("empty", str(tmp_path / "empty"))])
    with pytest.raises(DataError, match="training-only"):
        list_clips([Corpus("synthetic", a.path, train_only=True)])
    with pytest.raises(DataError, match="corpus name"):
        parse_data_dir(f"a:b={a.path}")
    assert parse_data_dir(f"mine={a.path}").name == "mine" and parse_data_dir(a.path).name == "a"
    alone = Corpus("fast", fast.path)
    with pytest.raises(DataError, match=r"corpus 'fast' \(.*\) is at 16000 Hz.*resample it first"):
        list_clips([alone])
    with pytest.raises(DataError, match="is not a folder"):
        list_clips([Corpus("file", str(next(Path(a.path).iterdir())))])


@pytest.mark.parametrize("value", ["", "   ", "mine=", "=/some/path"])
def test_an_empty_data_dir_or_corpus_name_is_refused_not_the_current_folder(value):
    """(Breaker, round 4) `--data-dir "mine="` read the current folder as a corpus."""
    with pytest.raises(DataError, match="empty"):
        parse_data_dir(value)


def test_a_symlink_loop_as_a_data_dir_is_one_line(tmp_path):
    """(Breaker, round 4) a self-linking folder gave a RuntimeError traceback from Path.resolve."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="loop"):
        parse_data_dir(str(loop))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.integers(2, 8), st.integers(0, 2**32 - 1))
def test_fold_groups_hold_out_every_speaker_exactly_once(n_speakers, folds, seed):
    speakers = [f"c{i % 3}/s{i:02d}" for i in range(n_speakers)]
    groups = fold_groups(speakers, folds, seed)
    assert sorted(s for g in groups for s in g) == sorted(speakers)  # each exactly once
    assert len(groups) == min(folds, n_speakers) and max(map(len, groups)) - min(map(len, groups)) <= 1
    assert groups == fold_groups(list(reversed(speakers)), folds, seed)  # reproducible from the seed alone


def test_no_fold_puts_a_speaker_of_any_corpus_in_training_and_held_out(two, tmp_path):
    synth = Corpus("synthetic", str(corpus(tmp_path / "s", {"espeak-en-us-m1": 1, "flite-awb": 1}, seed=3)), train_only=True)
    clips = list_clips([*two, synth])
    names, only = list(clips.keys), clips.train_only
    for folds in (2, 3, 6):
        kinds = fold_kinds(names, folds=folds, seed=4, train_only=only)
        held: list[str] = []
        for kind in kinds:
            sp = make_split(names, kind, 4, train_only=only, folds=folds)
            train = {clip_speaker(names[i]) for i in sp.train}
            test = {clip_speaker(names[i]) for i in sp.test}
            assert not train & test and not sp.val
            assert not any(s.startswith("synthetic/") for s in test)  # synthetic voices are never held out
            assert {"synthetic/espeak-en-us-m1", "synthetic/flite-awb"} <= train  # ... and always train
            held += sorted(test)
        assert sorted(held) == speakers_of(names, only)  # every real speaker held out exactly once
    # The split's name covers the real clips only: rebuilt from the real corpora alone.
    with_synth = make_split(names, "all", 0, train_only=only)
    without = make_split(list(list_clips(two).keys), "all", 0)
    assert with_synth.hash == without.hash and len(with_synth.train) == len(without.train) + 20


def test_synthetic_voices_are_never_scored_nor_in_the_statistics(two, tmp_path, monkeypatch):
    """A training-only corpus: in every epoch's pool at its share, never in validation, test, the
    scored clips of an `all` refit, or the normalisation statistics; augmentation off at evaluation."""
    from fsdd.datamodule import FSDDDataModule
    from fsdd.schema import AugmentConfig, VoicesConfig

    synth = corpus(tmp_path / "s", {"espeak-en-us-m1": 3, "flite-awb": 3}, seed=3)
    monkeypatch.setattr("fsdd.datamodule.synthetic_corpus", lambda voices, cache: Corpus("synthetic", str(synth), train_only=True))
    voices = VoicesConfig(synth=None, share=0.25, augment=AugmentConfig(chains=2))
    for split in ("all", "loso:beta/cy", "random"):
        dm = FSDDDataModule(list(two), split=split, cache_dir=tmp_path / "cache", voices=voices, augment=AugmentConfig(noise_snr_db=20))
        dm.setup()
        synthetic = {i for i, only in enumerate(dm.clips.train_only) if only}
        assert len(synthetic) == 60 and synthetic <= set(dm.split.train)
        assert not synthetic & set(dm.split.val) and not synthetic & set(dm.split.test) and not synthetic & set(dm.scored)
        real = [i for i in dm.split.train if i not in synthetic]
        frames = torch.cat([dm.sets["train"].feats[dm.split.train.index(i)] * dm.std + dm.mean for i in real])
        assert torch.allclose(frames.mean(0), dm.mean, atol=1e-4)  # statistics of the real training clips only
        (real_pool, k_real), (synth_pool, k_synth) = dm.pools
        assert k_real is None and real_pool.shape == (len(real), 2)  # the original and its noisy copy
        assert synth_pool.shape == (60, 2) and k_synth == min(60, round(len(real) * 0.25 / 0.75))  # two re-recordings, a share
        batches = list(dm.loader("train", train=True))
        assert sum(len(y) for _, _, y in batches) == len(real) + k_synth
        for part in ("test", "val", "scored"):
            if part in dm.sets:
                assert sum(len(y) for _, _, y in dm.loader(part)) == len(dm.sets[part])  # every clip once, as it is


@pytest.mark.slow
def test_a_several_corpora_artifact_verifies_with_each_corpus_by_name(two, tmp_path, capsys):
    from search.train import main as train_main
    from search.verify import main as verify_main

    a, b = two
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {hidden_size: 8}\ntrain: {epochs: 2, split: 'loso:beta/jack'}\n")
    args = ["--config", str(cfg), "--data-dir", f"alpha={a.path}", "--data-dir", f"beta={b.path}", "--out", str(tmp_path / "o")]
    assert train_main(args + ["--cache-dir", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    art = tmp_path / "o" / "model.safetensors"
    from search.artifact import read

    meta, _ = read(art)
    assert meta["format_version"] == "3" and json.loads(meta["corpora"]) == [{"clips": 60, "name": "alpha"}, {"clips": 40, "name": "beta"}]
    assert verify_main([str(art), "--data-dir", f"alpha={a.path}"]) == 2
    assert "pass --data-dir NAME=PATH for beta" in capsys.readouterr().err
    assert verify_main([str(art), "--data-dir", f"alpha={a.path}", "--data-dir", f"beta={b.path}"]) == 0
    got = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert got["agree"] == 1.0 and got["n_test"] == 20 and list(got["speakers"]) == ["beta/jack"]
    assert verify_main([str(art), "--data-dir", f"other={b.path}", "--split", "eval"]) == 0  # scored on recordings it never saw
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["n_test"] == 40
