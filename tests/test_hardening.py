"""Kinds of failure found by replaying public reports (issue 15), and the hand-offs of issue 13:
one error root printed in one line by every command, a reference decoder without torch."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fsdd.errors import Error
from search import artifact
from search.board import TrialBoard, write_experiment
from search.deploy.synthetic import random_artifact
from search.schema import from_dict

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("search.run", "search.train", "search.export", "search.verify", "search.deploy", "fsdd.download", "fsdd.synth")


# --- issue 13: one error type, one CLI wrapper; the reference decoder without torch ---------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_says_a_users_mistake_in_one_line(command, tmp_path):
    """A flag that does not exist, then an input that does not: `error: ...` in one line, exit 2."""
    for argv in (["--no-such-flag"], {"search.run": ["--resume", "--name", "nothing", "--out", str(tmp_path)],
                                      "search.train": ["--config", str(tmp_path / "none.yaml")],
                                      "search.export": [str(tmp_path / "none")],
                                      "search.verify": [str(tmp_path / "none.safetensors")],
                                      "search.deploy": [str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "o")],
                                      "fsdd.download": ["--write-manifest", str(tmp_path / "none")],
                                      "fsdd.synth": ["--engines", "nosuchengine"]}[command]):  # fmt: skip
        r = subprocess.run([sys.executable, "-m", command, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, (command, argv, r.stderr[-500:])
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["search.verify", "x.safetensors", "--data-dir", "mine="],
        ["search.verify", ""],
        ["search.train", "--out", ""],
        ["search.train", "--cache-dir", " "],
        ["search.run", "--out", ""],
        ["search.export", ""],
        ["search.deploy", "x.safetensors", "--out", ""],
        ["fsdd.synth", "--cache-dir", ""],
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(argv, tmp_path):
    """(Breaker, round 4) `fsdd.synth --cache-dir ""` filled the current folder; an empty path is
    never the current folder by accident."""
    r = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "empty" in r.stderr and r.stderr.count("\n") == 1, r.stderr[-500:]
    assert list(tmp_path.iterdir()) == []


def test_a_symlink_loop_given_as_a_folder_is_one_line(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for argv in (["search.verify", "x.safetensors", "--data-dir", str(loop)], ["search.run", "--out", str(loop), "--budget-kb", "4"]):
        r = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, (argv, r.stderr[-500:])


def test_a_bug_keeps_its_traceback():
    from fsdd.errors import run_cli

    def broken(argv):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_cli(broken, [])
    assert run_cli(lambda argv: (_ for _ in ()).throw(Error("bad\ninput")), []) == 2


def test_every_error_is_one_root():
    from fsdd import errors

    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert classes and all(issubclass(c, Error) for c in classes)
    assert str(Error("a\nb " + "x" * 1000)).count("\n") == 0 and len(str(Error("x" * 1000))) <= errors.MESSAGE_MAX


def test_reference_decoder_and_c_library_import_neither_torch_nor_lightning():
    heavy = "('torch', 'torchaudio', 'pytorch_lightning', 'lightning')"
    code = f"import sys, search.verify, search.deploy.__main__; print([m for m in sys.modules if m.split('.')[0] in {heavy}])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
    assert r.stdout.strip() == "[]"


# --- 1: every documented mode exports, or is refused before training -----------------------------


def test_quantlstm_modes_are_refused_before_any_training(tmp_path, capsys):
    from search.train import main

    for act in ("int8", "fp32"):
        cfg = tmp_path / f"ql-{act}.yaml"
        cfg.write_text(
            "model: {hidden_size: 8}\nfeatures: {n_fft: 256, hop_length: 128, n_mels: 20}\ntrain: {epochs: 3, split: random}\n"
            f"quant: {{mode: qat, bits: 4, scale: po2, warm_start: false, impl: quantlstm, act: {act}}}\n"
        )
        assert main(["--config", str(cfg), "--out", str(tmp_path / "ql"), "--data-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "quantlstm" in err and "cannot hold" in err, err
        assert not (tmp_path / "ql").exists()


@pytest.mark.parametrize("quant", [{"mode": "fp32"}, {"mode": "ptq_int8"}, {"mode": "qat", "bits": 3, "scale": "po2", "per_channel": True}])
def test_every_mode_saves_an_artifact_that_verifies(quant, tmp_path):
    """Each quant mode a config allows: the artifact is written and passes the reader's checks."""
    cfg = from_dict({"model": {"hidden_size": 6}, "quant": quant, "prune": {"schedule": [[0, 0.5]]}})
    path = random_artifact(cfg, tmp_path / "m.safetensors")
    meta, tensors = artifact.read(path)
    assert artifact.validate(meta, tensors, path) == cfg


# --- 3: one run per name, one process per run -------------------------------------------------------


def _claim(run_dir: str, started, result) -> None:
    from search import runfolder

    started.wait()
    try:
        runfolder.claim(Path(run_dir))
        result.put("claimed")
    except Error as e:
        result.put(str(e))


def test_two_runs_started_at_once_under_one_name_one_is_refused(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    started, result = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(str(tmp_path / "runs" / "twin"), started, result)) for _ in range(4)]
    for p in procs:
        p.start()
    started.set()
    for p in procs:
        p.join(60)
    outcomes = sorted(result.get(timeout=5) for _ in procs)
    assert outcomes.count("claimed") == 1
    assert all("already exists" in o and "--resume" in o for o in outcomes if o != "claimed")


def test_an_export_or_resume_of_a_run_in_use_is_refused(tmp_path, capsys):
    """A run folder held by another process (a search still running): export and --resume refuse it in one line."""
    from search.export import main as export_main
    from search.run import main as run_main

    run = tmp_path / "busy"
    (run / "trials").mkdir(parents=True)
    (run / "search.json").write_text(_settings_json())
    hold = f"from pathlib import Path; from search import runfolder; runfolder.hold(Path({str(run)!r})); print('held', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert export_main([str(run)]) == 2
        assert "in use by another process" in capsys.readouterr().err
        assert run_main(["--resume", "--name", "busy", "--out", str(tmp_path)]) == 2
        assert "in use by another process" in capsys.readouterr().err
    finally:
        holder.communicate("\n", timeout=30)
    assert export_main([str(run)]) == 0  # free again: nothing to export, an empty front


def _settings_json() -> str:
    from fsdd.schema import dump
    from search.schema import Budget, Config, RunSettings, Space

    return json.dumps(dump(RunSettings(name="busy", budget=Budget(36 * 1024), base=Config(), space=Space(), trials=3, time_budget_s=60.0)))


# --- 4: one HParams experiment for the whole run, read back by TensorBoard's own backend ------------


def test_hparams_columns_do_not_depend_on_which_trial_tensorboard_reads_first(tmp_path, tensorboard_hparams):
    domains = {"quant": ["fp32", "qat"], "bits": (2, 8), "sparsity": (0.2, 0.9), "prune_start": (0, 38), "lr": (0.002, 0.02)}
    write_experiment(tmp_path, domains, ["val_acc", "new_speaker_acc", "acc_george"])
    trials = {"0001-fp32-h4": {"quant": "fp32", "lr": 0.01}, "0002-qat4-po2-h8": {"quant": "qat", "bits": 4, "lr": 0.003, "sparsity": 0.5}}
    for name, params in trials.items():  # the fp32 trial, without QAT or pruning parameters, is read first
        board = TrialBoard(tmp_path / "trials" / name)
        board.hparams(params, {"val_acc": 0.5, "new_speaker_acc": 0.4, "acc_george": 0.3}, name)
        board.close()
    params, metrics, sessions = tensorboard_hparams(tmp_path)
    assert sorted(params) == sorted(domains) and metrics == ["val_acc", "new_speaker_acc", "acc_george"]
    assert sessions["0002-qat4-po2-h8"]["bits"] == 4 and sessions["0001-fp32-h4"]["quant"] == "fp32"


# --- 5: one training per TensorBoard run ------------------------------------------------------------


@pytest.mark.slow
def test_a_rerun_into_a_used_folder_is_refused_or_replaces_it_whole(small_data, cache_dir, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from search.train import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {hidden_size: 8}\ntrain: {epochs: 3}\n")
    args = ["--config", str(cfg), "--data-dir", str(small_data), "--cache-dir", str(cache_dir), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    first = (tmp_path / "o" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(args + ["--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run" in err and "--force" in err
    assert (tmp_path / "o" / "model.safetensors").read_bytes() == first  # untouched
    assert main(args + ["--epochs", "2", "--force"]) == 0
    events = list((tmp_path / "o").glob("events.out.tfevents.*"))
    assert len(events) == 1 and not list(tmp_path.glob(".o.*"))  # one run's curves, no staging left
    steps = [e.step for e in EventAccumulator(str(events[0])).Reload().Scalars("val_acc")]
    assert steps == sorted(set(steps)) and len(steps) == 2
    (tmp_path / "o" / "notes.txt").write_text("mine")
    assert main(args + ["--force"]) == 2 and "notes.txt" in capsys.readouterr().err
    assert (tmp_path / "o" / "notes.txt").exists()


def test_a_restarted_trial_starts_its_tensorboard_run_afresh(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tmp_path / "trials" / "0001-fp32-h4"
    for loss in (2.0, 1.0):  # interrupted, then restarted by --resume: the trial trains again from the start
        board = TrialBoard(folder)
        board.scalar("train/val_loss", loss, 0)
        board.close()
    (events,) = folder.glob("events.out.tfevents.*")
    assert [e.value for e in EventAccumulator(str(events)).Reload().Scalars("train/val_loss")] == [1.0]


# --- 6: the same model, the same bytes --------------------------------------------------------------


def test_the_same_model_and_metadata_give_the_same_bytes(tmp_path):
    """Written in two processes (the safetensors writer orders metadata by a per-process hash map)."""
    code = (
        "import sys; from pathlib import Path; from search.schema import from_dict; from search.deploy.synthetic import random_artifact; "
        "random_artifact(from_dict({'model': {'hidden_size': 5}, 'quant': {'mode': 'qat', 'bits': 4}}), Path(sys.argv[1]))"
    )
    digests = set()
    for k in range(3):
        path = tmp_path / f"a{k}.safetensors"
        subprocess.run(
            [sys.executable, "-c", code, str(path)], check=True, cwd=REPO, env=os.environ | {"PYTHONHASHSEED": str(k)}, timeout=120
        )
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    meta, tensors = artifact.read(tmp_path / "a0.safetensors")
    blob = (tmp_path / "a0.safetensors").read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = blob[8 : 8 + n].decode()
    assert header.startswith('{"__metadata__":{') and list(json.loads(header)["__metadata__"]) == sorted(meta)
    assert n % 8 == 0 and artifact.canonical(blob) == blob  # a fixed point: canonical twice is canonical once
    assert all(np.array_equal(tensors[k], v) for k, v in artifact.read(tmp_path / "a1.safetensors")[1].items())


def test_files_written_atomically_get_a_new_files_permissions(tmp_path):
    """Whoever makes the file (safetensors writes its own), it ends with the permissions of any new file, not mkstemp's 0600."""
    from safetensors.numpy import save_file

    from fsdd.files import atomic_write, current_umask

    atomic_write(tmp_path / "a.safetensors", lambda tmp: save_file({"x": np.zeros(2, np.float32)}, tmp))
    atomic_write(tmp_path / "b.txt", lambda tmp: Path(tmp).write_text("b"))
    for name in ("a.safetensors", "b.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~current_umask()
