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
    for key in ("val_acc", "test_acc", "n_params", "hidden_size", "split", "split_hash", "seed", "epochs"):
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
    from search.protocol import run_one
    from search.schema import from_dict

    cfg = from_dict({"model": {"hidden_size": 8}, "train": {"epochs": 2}})
    a, _ = run_one(cfg, small_data, tmp_path / "a", cache_dir)
    b, _ = run_one(cfg, small_data, tmp_path / "b", cache_dir)
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
    data = [] if "--data-dir" in args else ["--data-dir", str(small_data)]
    code, out, err = run_main(capsys, *data, "--cache-dir", str(cache_dir), "--epochs", "1", *args)
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

    import search.fit as train_mod
    from search.schema import from_dict

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
    from fsdd.errors import Error
    from search.fit import fit, make_datamodule
    from search.schema import from_dict

    cfg = from_dict({"model": {"hidden_size": 4}, "train": {"epochs": 2}})
    dm = make_datamodule(cfg, small_data, cache_dir)
    dm.train_versions.padded.fill_(float("nan"))  # the config refuses a learning rate that would diverge
    with pytest.raises(Error, match="diverged.*try a lower train.lr"):
        fit(cfg, dm)


def test_best_epoch_is_best_accuracy_then_lowest_loss():
    from types import SimpleNamespace

    from search.fit import BestState
    from search.model import LSTMClassifier

    best = BestState(first_epoch=1)
    module = SimpleNamespace(net=LSTMClassifier(4, 3))
    history = [(0.99, 0.01), (0.90, 0.5), (0.95, 0.4), (0.95, 0.2), (0.95, 0.3), (0.94, 0.01)]
    for epoch, (acc, loss) in enumerate(history):
        trainer = SimpleNamespace(current_epoch=epoch, callback_metrics={"val_acc": torch.tensor(acc), "val_loss": torch.tensor(loss)})
        best.on_train_epoch_end(trainer, module)
    # Epoch 0 is before the last pruning step (first_epoch=1); 3 ties 2 and 4 on accuracy with the lowest loss.
    assert best.epoch == 3 and best.val_acc == pytest.approx(0.95)


# --- issue 10: unusable clips, impossible configs and a corrupt float parent --------------


def no_training(monkeypatch) -> None:
    import search.fit as train_mod

    def boom(*args, **kwargs):
        raise AssertionError("training started on bad input")

    monkeypatch.setattr(train_mod, "fit", boom)


def tiny_config(tmp_path: Path, text: str = "") -> str:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model: {hidden_size: 4}\ntrain: {epochs: 2}\n" + text)
    return str(cfg)


def _nan_and_inf_clip(data: Path) -> str:
    import soundfile as sf

    from fsdd.audio import read_wav

    path = data / "3_theo_0.wav"
    x = read_wav(path).astype("float32")
    path.unlink()  # a symlink into the shared data: replace it, never write through it
    x[100], x[200] = float("nan"), float("inf")
    sf.write(path, x, 8000, subtype="FLOAT")
    return "3_theo_0.wav: 2 non-finite samples (NaN or infinite), the first at sample 100"


def _label_ten(data: Path) -> str:
    (data / "10_theo_0.wav").symlink_to((data / "3_theo_0.wav").resolve())
    return "10_theo_0.wav: label 10 is outside 0-9"


@pytest.mark.parametrize("make_bad", [_nan_and_inf_clip, _label_ten], ids=["nan-inf-samples", "label-10"])
@pytest.mark.parametrize("cached", [False, True], ids=["fresh", "cached"])
def test_unusable_clip_is_named_in_one_line_before_training(small_data, cache_dir, tmp_path, capsys, monkeypatch, make_bad, cached):
    base = ["--config", tiny_config(tmp_path), "--data-dir", str(small_data), "--cache-dir", str(cache_dir), "--out", str(tmp_path / "o")]
    if cached:  # features of the good clips already cached: the bad one must still be named
        from fsdd.features import load_features
        from fsdd.schema import FeatureConfig

        load_features(small_data, FeatureConfig(), cache_dir)
    words = make_bad(small_data)
    no_training(monkeypatch)
    code, out, err = run_main(capsys, *base)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err


@pytest.mark.parametrize(
    "text, words",
    [
        ("features: {win_length: 800}\n", "features.win_length must be in 1..n_fft (400) or null, got 800"),
        ("features: {f_min: 3000, f_max: 1000}\n", "features.f_min must be in [0, f_max) = [0, 1000) Hz, got 3000"),
        ("prune: {schedule: [[1, 0.5]]}\n", "prune.schedule: epoch 1 is outside training or leaves no epoch after it"),
    ],
    ids=["win_length", "f_min-f_max", "prune-at-last-epoch"],
)
def test_impossible_config_is_one_line_before_any_work(small_data, cache_dir, tmp_path, capsys, monkeypatch, text, words):
    import search.fit as train_mod

    def no_data(*args, **kwargs):
        raise AssertionError("data read for an impossible config")

    monkeypatch.setattr(train_mod, "make_datamodule", no_data)
    no_training(monkeypatch)
    cfg = tiny_config(tmp_path, text)
    code, out, err = run_main(capsys, "--config", cfg, "--data-dir", str(small_data), "--cache-dir", str(cache_dir))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err


QAT_WARM = "quant: {mode: qat, bits: 4, warm_start: true}\n"


def test_truncated_float_parent_is_retrained_with_one_warning(small_data, cache_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    args = ["--config", tiny_config(tmp_path, QAT_WARM), "--data-dir", str(small_data), "--cache-dir", str(cache_dir)]
    code, out, _ = run_main(capsys, *args, "--out", str(tmp_path / "a"))
    assert code == 0
    (parent,) = (cache_dir / "parents").glob("*.safetensors")
    good = {k: v.clone() for k, v in load_file(parent).items()}  # load_file maps the file: copy before truncating it
    parent.write_bytes(parent.read_bytes()[:100])  # issue 10: truncated to 100 bytes
    code, out, err = run_main(capsys, *args, "--out", str(tmp_path / "b"))
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["quant"] == "qat4-float"
    assert err.count("\n") == 1, err
    assert err.startswith(f"warning: cached float parent {parent} cannot be used (unreadable: ") and "training it again" in err
    healed = load_file(parent)  # retrained (same seed, same weights) and written back whole
    assert set(healed) == set(good) and all(torch.equal(healed[k], good[k]) for k in good)


def test_float_parent_that_fails_its_check_is_retrained(small_data, cache_dir, monkeypatch, capsys):
    from safetensors.torch import load_file, save_file

    import search.fit as train_mod
    from search.schema import from_dict

    cfg = from_dict({"model": {"hidden_size": 4}, "train": {"epochs": 2}, "quant": {"mode": "qat", "bits": 4}})
    dm = train_mod.make_datamodule(cfg, small_data, cache_dir)
    good = train_mod.float_parent(cfg, dm, cache_dir)
    (path,) = (cache_dir / "parents").glob("*.safetensors")
    calls = []
    real_fit = train_mod.fit
    monkeypatch.setattr(train_mod, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))

    def nan(t):
        t["fc.bias"][0] = float("nan")

    corruptions = {
        "garbage": lambda: path.write_bytes(b"\0" * 64),
        "missing key": lambda: save_file({k: v for k, v in good.items() if k != "fc.bias"}, path),
        "extra key": lambda: save_file({**good, "extra": torch.zeros(1)}, path),
        "wrong shape": lambda: save_file({**good, "fc.weight": torch.zeros(10, 5)}, path),
        "wrong dtype": lambda: save_file({**good, "fc.weight": good["fc.weight"].double()}, path),
        "non-finite": lambda: save_file({**good, "fc.bias": torch.full_like(good["fc.bias"], float("inf"))}, path),
    }
    for n, (what, corrupt) in enumerate(corruptions.items(), 1):
        corrupt()
        capsys.readouterr()
        state = train_mod.float_parent(cfg, dm, cache_dir)
        err = capsys.readouterr().err
        assert len(calls) == n, what
        assert err.count("\n") == 1 and str(path) in err and "cannot be used" in err, (what, err)
        assert all(torch.equal(state[k], good[k]) for k in good), what
    train_mod.float_parent(cfg, dm, cache_dir)  # healed: read back, silently, without training
    assert len(calls) == len(corruptions) and capsys.readouterr().err == ""
    assert set(load_file(path)) == set(good)


def test_output_path_that_is_a_file_is_one_line(small_data, cache_dir, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {hidden_size: 4}\ntrain: {epochs: 1}\n")
    rc = main(["--config", str(cfg), "--data-dir", str(small_data), "--cache-dir", str(cache_dir), "--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "taken" in err
