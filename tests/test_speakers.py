"""search.protocol: the per-speaker table and its pooled figure; the six-speaker table of one
configuration from the CLI (search.train --split speakers)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fsdd.schema import dump, load
from search.protocol import SpeakerTable, fold_result
from search.schema import FoldResult
from search.train import main as train_main


def fold(speaker: str, n: int, correct: int) -> FoldResult:
    conf = [[0] * 10 for _ in range(10)]
    conf[0][0], conf[0][1] = correct, n - correct
    return FoldResult(speaker, n, correct, float(n - correct), tuple(tuple(r) for r in conf))


@given(st.lists(st.tuples(st.integers(1, 500), st.floats(0, 1)), min_size=1, max_size=6))
def test_pooled_accuracy_weighs_speakers_by_their_clips(counts) -> None:
    folds = tuple(fold(f"s{i}", n, round(n * a)) for i, (n, a) in enumerate(counts))
    t = SpeakerTable(folds)
    total = sum(f.n for f in folds)
    assert t.pooled_acc == pytest.approx(sum(f.acc * f.n for f in folds) / total)
    assert t.pooled_acc == sum(f.correct for f in folds) / total
    assert t.mean_acc == pytest.approx(sum(f.acc for f in folds) / len(folds))
    assert t.worst.acc == min(f.acc for f in folds)
    s = t.summary()
    assert s["new_speaker_acc"] == t.pooled_acc and s["new_speaker_worst"] == t.worst.acc
    assert {k for k in s if k.startswith("acc_")} == {f"acc_{f.speaker}" for f in folds}


def test_fold_result_from_logits_counts_a_confusion_matrix() -> None:
    z = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    z = torch.cat([z, torch.zeros(4, 7)], 1)
    y = torch.tensor([0, 1, 1, 2])
    f = fold_result("x", z, y)
    assert (f.n, f.correct) == (4, 3) and f.acc == 0.75
    assert f.confusion[1][0] == 1 and f.confusion[1][1] == 1 and sum(map(sum, f.confusion)) == 4
    assert load(FoldResult, json.loads(json.dumps(dump(f)))) == f


@pytest.mark.slow
def test_six_speaker_table_from_the_cli(small_data, cache_dir, tmp_path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {hidden_size: 4}\nfeatures: {cmvn: meanvar}\ntrain: {epochs: 2}\n")
    argv = ["--config", str(cfg), "--split", "speakers", "--data-dir", str(small_data), "--cache-dir", str(cache_dir)]
    assert train_main([*argv, "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| ") and line.split("|")[1].strip() in
            ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")]  # fmt: skip
    assert len(rows) == 6
    result = json.loads(out[-1])
    assert result["protocol"] == "speakers" and len(result["folds"]) == 6
    assert sum(f["n"] for f in result["folds"]) == 240  # every clip held out once
    # A test speaker is kept out of every fold: five folds.
    assert train_main([*argv, "--test-speaker", "theo", "--out", str(tmp_path / "p")]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [f["speaker"] for f in result["folds"]] == ["george", "jackson", "lucas", "nicolas", "yweweler"]
    # An unknown speaker: one line, exit 2.
    assert train_main([*argv, "--test-speaker", "bob", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown speaker 'bob'" in err
