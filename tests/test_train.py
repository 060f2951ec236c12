"""search.train: a short real training run, its JSON line and artifact, and its bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search import artifact
from search.train import main


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_short_training_run_prints_json_and_exports(small_data, cache_dir, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {hidden_size: 32}\ntrain: {epochs: 30, batch_size: 32}\n")
    code, out, _ = run_main(
        capsys,
        "--config",
        str(cfg),
        "--data-dir",
        str(small_data),
        "--cache-dir",
        str(cache_dir),
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("val_acc", "test_acc", "params", "hidden_size", "split", "split_hash", "seed", "epochs"):
        assert key in result
    assert result["hidden_size"] == 32 and result["epochs"] == 30 and result["seed"] == 0
    assert 0 <= result["test_acc"] <= 1 and result["val_acc"] > 0.3  # chance is 0.1
    assert artifact.payload_bytes(result["artifact"]) == result["size_bytes"]
    assert (tmp_path / "o" / "predictions.json").exists()
    # Lightning's TensorBoard logs: train loss, validation accuracy, learning rate.
    events = list((tmp_path / "o").rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent)).Reload()
    tags = acc.Tags()["scalars"]
    assert {"train_loss", "val_acc"} <= set(tags)
    lr = [e.value for e in acc.Scalars(next(t for t in tags if t.startswith("lr")))]
    # Cosine schedule, stepped once per epoch (manual optimization steps it itself).
    assert len(lr) == 30 and lr[0] > lr[15] > lr[-1] > 0


def test_same_seed_same_result(small_data, cache_dir, tmp_path):
    from search.config import from_dict
    from search.train import run

    cfg = from_dict({"model": {"hidden_size": 8}, "train": {"epochs": 2}})
    a = run(cfg, small_data, tmp_path / "a", cache_dir)
    b = run(cfg, small_data, tmp_path / "b", cache_dir)
    assert a["test_acc"] == b["test_acc"] and a["val_acc"] == b["val_acc"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data-dir", "/nonexistent/fsdd"], "does not exist"),
        (["--split", "bogus"], "unknown split"),
        (["--split", "speaker:nobody"], "unknown speaker"),
        (["--config", "configs/nope.yaml"], "cannot read config"),
    ],
)
def test_bad_input_one_line(small_data, cache_dir, capsys, args, message):
    base = ["--data-dir", str(small_data), "--cache-dir", str(cache_dir), "--epochs", "1"]
    code, out, err = run_main(capsys, *base, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_empty_data_dir_and_corrupt_wav(small_data, cache_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_main(capsys, "--data-dir", str(empty), "--cache-dir", str(cache_dir))
    assert code == 2 and "holds no .wav files" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in list(Path(small_data).iterdir())[:30]:
        (bad / f.name).symlink_to(f.resolve())
    (bad / "3_theo_49.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    code, _, err = run_main(capsys, "--data-dir", str(bad), "--cache-dir", str(cache_dir))
    assert code == 2 and "3_theo_49.wav" in err and err.count("\n") == 1


def test_malformed_config_names_the_field(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {hidden_size: 16}\ntrain: {epochz: 3}\n")
    code, _, err = run_main(capsys, "--config", str(cfg))
    assert code == 2 and "train.epochz" in err and err.count("\n") == 1


def test_cli_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "search.train", "--data-dir", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data dir")


def test_concurrent_children_train_their_float_parent_once(small_data, cache_dir, monkeypatch):
    import threading

    import search.train as train_mod
    from search.config import from_dict

    cfg = from_dict({"model": {"hidden_size": 4}, "train": {"epochs": 2}, "quant": {"mode": "qat", "bits": 4}})
    dm = train_mod.make_datamodule(cfg, small_data, cache_dir)
    calls = []
    real_fit = train_mod.fit

    def counting_fit(*args, **kwargs):
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train_mod, "fit", counting_fit)
    results = []
    threads = [threading.Thread(target=lambda: results.append(train_mod.float_parent(cfg, dm, cache_dir))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 3
    assert all(set(r) == set(results[0]) for r in results)
    # A child with other QAT settings (bits, scale, fine-tuning epochs) shares the parent.
    other = cfg.replace(quant={"bits": 2, "scale": "po2", "parent_epochs": 2}, train={"epochs": 5})
    train_mod.float_parent(other, dm, cache_dir)
    assert len(calls) == 1
    train_mod.float_parent(cfg.replace(model={"hidden_size": 5}), dm, cache_dir)  # another shape: another parent
    assert len(calls) == 2


def test_diverging_training_raises(small_data, cache_dir):
    from search.config import from_dict
    from search.train import fit, make_datamodule

    cfg = from_dict({"model": {"hidden_size": 4}, "train": {"epochs": 2, "lr": float("inf")}})
    dm = make_datamodule(cfg, small_data, cache_dir)
    with pytest.raises(FloatingPointError, match="diverged"):
        fit(cfg, dm)


def test_best_epoch_is_best_accuracy_then_lowest_loss():
    from types import SimpleNamespace

    from search.model import LSTMClassifier
    from search.train import BestState

    best = BestState(first_epoch=1)
    module = SimpleNamespace(net=LSTMClassifier(4, 3))
    history = [(0.99, 0.01), (0.90, 0.5), (0.95, 0.4), (0.95, 0.2), (0.95, 0.3), (0.94, 0.01)]
    for epoch, (acc, loss) in enumerate(history):
        trainer = SimpleNamespace(current_epoch=epoch, callback_metrics={"val_acc": torch.tensor(acc), "val_loss": torch.tensor(loss)})
        best.on_train_epoch_end(trainer, module)
    # Epoch 0 is before the last pruning step (first_epoch=1); 3 ties 2 and 4 on accuracy with the lowest loss.
    assert best.epoch == 3 and best.val_acc == pytest.approx(0.95)
