"""search.run end to end, with Ray on loopback: tiny searches (few clips, 2 epochs, 4-6 trials)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.run import main
from search.size import KIB

TINY = """
base:
  train: {epochs: 2, batch_size: 32}
space:
  hidden_sizes: [4, 8, 12]
  n_mfcc: [8, 13]
  qat_epochs: 2
"""


@pytest.fixture()
def tiny_config(tmp_path) -> Path:
    f = tmp_path / "tiny.yaml"
    f.write_text(TINY)
    return f


def args(tiny_config, small_data, cache_dir, out, name, *extra) -> list[str]:
    return [
        "--config", str(tiny_config), "--data-dir", str(small_data), "--cache-dir", str(cache_dir),
        "--out", str(out), "--name", name, "--time-budget", "8m", *extra,
    ]  # fmt: skip


def ray_trials(run_dir: Path) -> dict[str, dict]:
    """Last result of every trial Ray recorded, by trial id (with `dir`: its folder's name)."""
    out = {}
    for f in run_dir.glob("*/result.json"):
        lines = f.read_text().strip().splitlines()
        if lines:
            last = json.loads(lines[-1])
            out[last["trial_id"]] = last | {"dir": f.parent.name}
    return out


def tensorboard_runs(run_dir: Path) -> dict[str, dict]:
    """What TensorBoard shows for `--logdir run_dir`: its runs (folders holding event files),
    each with its scalar tags and whether it has an HParams row, read with TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(run_dir))
    mux.Reload()
    runs = {}
    for run, tags in mux.Runs().items():
        try:
            plugins = mux.GetAccumulator(run).PluginTagToContent("hparams")
        except KeyError:  # no HParams row in this run
            plugins = {}
        runs[run] = {"scalars": set(tags["scalars"]) | set(tags.get("tensors", [])), "hparams": plugins}
    return runs


@pytest.mark.slow
def test_search_end_to_end_with_a_failing_trial(tiny_config, small_data, cache_dir, tmp_path, capsys, tensorboard_hparams):
    from search.trainable import run_trial

    marker = tmp_path / "failed-once"

    def fail_once(params, **kw):  # a closure, so Ray ships it by value to the workers
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return run_trial(params, **kw)
        os.close(fd)
        raise RuntimeError("injected trial failure")

    budget_kb = 2.0
    code = main(
        args(tiny_config, small_data, cache_dir, tmp_path / "runs", "e2e", "--budget-kb", str(budget_kb), "--trials", "5"), fail_once
    )
    out = capsys.readouterr().out
    assert code == 0
    run_dir = tmp_path / "runs" / "e2e"
    assert f"tensorboard --logdir {run_dir} --host 127.0.0.1" in out
    final_status = [line for line in out.splitlines() if " ended: " in line][-1]
    assert re.search(r"[^0-9]1 failed", final_status) and "winner" in out, final_status  # the injected failure only
    # The search went on after the failure: the four other trials ran (some may be stopped early).
    assert marker.exists() and len(ray_trials(run_dir)) == 4
    assert list(run_dir.glob("trials/*/record.json"))
    summary = json.loads((run_dir / "pareto.json").read_text())
    budget = int(budget_kb * KIB)
    assert summary["front"]
    for row in summary["front"]:
        assert row["size_bytes"] <= budget  # the budget is never violated by an exported point
        artifact = run_dir / row["artifact"]
        assert artifact.stat().st_size - 8 - int.from_bytes(artifact.read_bytes()[:8], "little") == row["size_bytes"]
        assert row["verify_test_acc"] == row["test_acc"] or row["quant"] == "ptq_int8"
    for name in ("pareto.csv", "pareto.png"):
        assert (run_dir / name).stat().st_size > 0
    # Every exported artifact verifies with the CLI, from the artifact and the wavs alone.
    from search.verify import main as verify_main

    first = run_dir / summary["front"][0]["artifact"]
    assert verify_main([str(first), "--data-dir", str(small_data)]) == 0
    verified = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert verified["size_bytes"] == summary["front"][0]["size_bytes"]
    # Infeasible configurations are never trained: nothing over budget has weights.
    for trial in run_dir.glob("trials/*"):
        cfg_size = json.loads((trial / "record.json").read_text())["size_bytes"] if (trial / "record.json").exists() else None
        if cfg_size is not None:
            assert cfg_size <= budget
    # TensorBoard: one run per trained trial, named for what it is, with its curves and HParams row.
    runs = tensorboard_runs(run_dir)
    trained = {r["dir"] for r in ray_trials(run_dir).values() if not r.get("infeasible")}
    assert set(runs) == {".", *(f"trials/{d}" for d in trained)}, (set(runs), trained)
    assert set(runs.pop(".")["hparams"]) == {"_hparams_/experiment"}  # the run's one experiment description
    # Read back by TensorBoard's own HParams backend: every searched parameter is a column,
    # whichever trial it reads first (issue 15), and every trial that finished is a session.
    columns, metrics, sessions = tensorboard_hparams(run_dir)
    assert {"quant", "bits", "scale", "per_channel", "warm_start", "sparsity", "prune_start", "prune_span", "prune_end"} <= set(columns)
    assert {"prune_steps", "lr", "hidden_size", "n_mfcc", "hop_length"} <= set(columns)
    assert {"val_acc", "size_kib"} <= set(metrics) and {f.parent.name for f in run_dir.glob("trials/*/record.json")} <= set(sessions)
    for name, run in runs.items():
        assert re.fullmatch(r"trials/\d{4}-(fp32|ptq_int8|qat\d-(po2|float)(-pc)?)-h\d+", name), name
        assert "train/train_loss" in run["scalars"] and "train/lr" in run["scalars"], (name, run["scalars"])
    finished = {f.parent.name for f in run_dir.glob("trials/*/record.json")}
    for d in finished:
        run = runs[f"trials/{d}"]
        assert "_hparams_/session_start_info" in run["hparams"] and "val_acc" in run["scalars"]
        params = json.loads((run_dir / "trials" / d / "record.json").read_text())["params"]
        start = run["hparams"]["_hparams_/session_start_info"]
        for key in ("quant", "hidden_size", "lr", "n_mfcc"):
            assert key.encode() in start, (key, d)  # every searched parameter is in the HParams row
        assert params


@pytest.mark.slow
def test_infeasible_configurations_are_reported_not_trained(tmp_path, small_data, cache_dir, capsys):
    # fp32 only: 16 MFCCs do not fit the budget even at h=4, 8 MFCCs do.
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "base: {train: {epochs: 2}}\nspace: {quant_modes: [fp32], hidden_sizes: [4], n_mfcc: [8, 16], hop_length: [80], prune: false}\n"
    )
    code = main(
        ["--config", str(cfg), "--data-dir", str(small_data), "--cache-dir", str(cache_dir), "--out", str(tmp_path / "r"),
         "--name", "inf", "--budget-kb", "1.3", "--trials", "6", "--time-budget", "5m"]
    )  # fmt: skip
    assert code == 0
    run_dir = tmp_path / "r" / "inf"
    results = ray_trials(run_dir)
    infeasible = [r for r in results.values() if r.get("infeasible")]
    assert infeasible, "the seeded sampler proposed no infeasible point; widen the test"
    for r in infeasible:
        assert r["training_iteration"] == 1 and r["size_bytes"] > 1.3 * KIB
        assert not (run_dir / "trials" / r["dir"] / "weights.safetensors").exists()


@pytest.mark.slow
def test_kill_then_resume_keeps_every_finished_trial(tiny_config, small_data, cache_dir, tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "search.run", *args(tiny_config, small_data, cache_dir, out, "kill", "--budget-kb", "4", "--trials", "40")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run_dir = out / "kill"
    deadline = time.time() + 240
    try:
        while len(list(run_dir.glob("trials/*/record.json"))) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        time.sleep(1.5)  # let Ray save the experiment state once more
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
    before = {f.parent.name for f in run_dir.glob("trials/*/record.json")}
    assert 2 <= len(before) < 40, "the run ended before it was killed; give it more trials"
    # A new run under the same name refuses rather than overwrites.
    assert main(["--budget-kb", "4", "--out", str(out), "--name", "kill", "--config", str(tiny_config)]) == 2
    code = main(["--resume", "--name", "kill", "--out", str(out), "--data-dir", str(small_data)])
    assert code == 0
    after = {f.parent.name for f in run_dir.glob("trials/*/record.json")}
    assert before <= after and len(after) > len(before)
    known = {r["dir"] for r in ray_trials(run_dir).values()}
    assert before <= known  # Ray's restored experiment still knows them (its folders bear the same names)
    assert json.loads((run_dir / "pareto.json").read_text())["front"]


@pytest.mark.slow
def test_a_run_stopped_by_its_time_budget_resumes_with_a_new_one(tiny_config, small_data, cache_dir, tmp_path, capsys):
    """(A new user's try, round 4) Ray saved its own time budget with the run and, on resume, went
    on with what was left of it: nothing, so the printed resume command ran no trial, in a loop."""
    out, run_dir = tmp_path / "runs", tmp_path / "runs" / "tb"
    # 30 s each: on busy CI cores the first trial actor alone takes about 7 s to start.
    assert main(args(tiny_config, small_data, cache_dir, out, "tb", "--budget-kb", "4", "--trials", "5000", "--time-budget", "30s")) == 0
    assert "to go on with the search" in capsys.readouterr().out
    before = {f.parent.name for f in run_dir.glob("trials/*/record.json")}
    assert 1 <= len(before) < 5000
    resume = ["--resume", "--name", "tb", "--out", str(out), "--data-dir", str(small_data), "--cache-dir", str(cache_dir)]
    assert main([*resume, "--time-budget", "30s"]) == 0
    text = capsys.readouterr().out
    after = {f.parent.name for f in run_dir.glob("trials/*/record.json")}
    assert before < after, text[-2000:]  # new trials trained in the resumed session's own 30 s
    assert json.loads((run_dir / "search.json").read_text())["time_budget_s"] == 30  # the run's settings unchanged


def test_bad_inputs_one_clear_line(tiny_config, small_data, cache_dir, tmp_path, capsys):
    base = ["--config", str(tiny_config), "--data-dir", str(small_data), "--out", str(tmp_path)]
    cases = [
        (["--budget-kb", "0.05", *base], "below the smallest model"),
        (["--budget-kb", "36", "--config", str(tmp_path / "missing.yaml")], "cannot read config"),
        (["--budget-kb", "36", "--address", "127.0.0.1:1", *base], "cannot reach a Ray cluster"),
        (["--resume", "--name", "nothing", *base], "no run named"),
        (["--budget-kb", "36", *base[:2], "--data-dir", str(tmp_path / "nodata")], "does not exist"),
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {train: {epochs: 2}}\nspace: {hidden_size: [4]}\n")
    cases.append((["--budget-kb", "36", "--config", str(bad)], "unknown field 'space.hidden_size'"))
    (tmp_path / "taken").mkdir()
    cases.append((["--budget-kb", "36", *base, "--name", "taken"], "already exists"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (argv, err)


def test_no_traceback_from_the_cli(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "search.run", "--budget-kb", "0.01"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("error: budget")


SPEAKERS_TINY = """
base:
  train: {epochs: 2, batch_size: 32, split: speakers}
  features: {cmvn: meanvar}
space:
  hidden_sizes: [4, 8]
  n_mfcc: [8, 13]
  quant_modes: [fp32, qat]
  qat_epochs: 2
  prune: false
"""


@pytest.mark.slow
def test_speaker_protocol_end_to_end_with_a_test_speaker(small_data, cache_dir, tmp_path, capsys):
    cfg = tmp_path / "sp.yaml"
    cfg.write_text(SPEAKERS_TINY)
    argv = ["--config", str(cfg), "--data-dir", str(small_data), "--cache-dir", str(cache_dir), "--out", str(tmp_path / "runs"),
            "--name", "sp", "--budget-kb", "3", "--trials", "4", "--time-budget", "8m", "--test-speaker", "theo"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "sp"
    assert "held-out-speaker folds" in out and "each speaker held out of training in turn" in out and "test speaker theo" in out
    summary = json.loads((run_dir / "pareto.json").read_text())
    assert summary["protocol"] == "speakers" and summary["test_speaker"] == "theo" and summary["front"]
    folds = ["george", "jackson", "lucas", "nicolas", "yweweler"]
    for row in summary["front"]:
        assert row["size_bytes"] <= 3 * KIB
        assert [f["speaker"] for f in row["folds"]] == folds  # the test speaker is in no fold
        per = [row[f"acc_{s}"] for s in folds]
        assert row["new_speaker_worst"] == min(per) and abs(row["new_speaker_mean"] - sum(per) / 5) < 1e-9
        assert row["val_acc"] == sum(f["correct"] for f in row["folds"]) / sum(f["n"] for f in row["folds"])
        # The artifact was retrained on the five search speakers and tested once on theo; it verifies.
        assert row["refit_split"] == "loso:theo" and row["test_acc"] is not None
        assert row["verify_agree"] == 1.0 and row["verify_test_acc"] == row["test_acc"]
        from search.artifact import read

        meta, _ = read(run_dir / row["artifact"])
        assert meta["format_version"] == "3" and meta["split"] == "loso:theo"
        assert json.loads(meta["estimate"])["new_speaker_acc"] == row["new_speaker_acc"]
    header = (run_dir / "pareto.csv").read_text().splitlines()[0].split(",")
    for col in ("new_speaker_acc", "new_speaker_mean", "new_speaker_worst", "acc_george", "acc_yweweler", "test_acc"):
        assert col in header
    assert (run_dir / "confusion.png").stat().st_size > 0 and (run_dir / "pareto.png").stat().st_size > 0
    # TensorBoard: per-fold curves and the new-speaker figures, one run per trial.
    runs = tensorboard_runs(run_dir)
    assert runs.pop(".") and runs and all(name.startswith("trials/") for name in runs)
    finished = [f.parent.name for f in run_dir.glob("trials/*/record.json")]
    for d in finished:
        tags = runs[f"trials/{d}"]["scalars"]
        assert {"new_speaker/pooled_acc", "new_speaker/acc_george", "train/george/train_loss", "new_speaker_worst"} <= tags, tags
    # A damaged run still exports, or fails in one line leaving the previous front as it was.
    from search.export import main as export_main

    before = sorted(p.name for p in (run_dir / "artifacts").iterdir())
    ray_log = next(run_dir.glob("*/result.json"))
    ray_log.write_text(ray_log.read_text()[:-25])  # the last line cut, as a killed process leaves it
    refit_record = next(run_dir.glob("refit/*/refit.json"))
    refit_record.write_text(refit_record.read_text()[:40])  # cut short: that member is refit again
    assert export_main([str(run_dir)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (run_dir / "artifacts").iterdir()) == before
    # A refit whose model was cut since (a cache that cannot be read) is refit again, never published as it is.
    refit_model = next(run_dir.glob("refit/*/model.safetensors"))
    refit_model.write_bytes(refit_model.read_bytes()[:200])
    assert export_main([str(run_dir)]) == 0
    capsys.readouterr()
    for artifact in (run_dir / "artifacts").glob("*.safetensors"):
        read(artifact)  # whole again
    shutil.rmtree(next(run_dir.glob("refit/*")))  # that member must be refit again, from data that is gone
    assert export_main([str(run_dir), "--data-dir", str(tmp_path / "gone")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert sorted(p.name for p in (run_dir / "artifacts").iterdir()) == before  # not deleted by the failed export
    assert not (run_dir / ".artifacts.new").exists()


VOICES_TINY = SPEAKERS_TINY.replace(
    "  features: {cmvn: meanvar}\n",
    "  features: {cmvn: meanvar}\n"
    "  voices: {synth: {engines: [espeak], espeak_accents: [en-us, en-gb], espeak_variants: 2}, augment: {chains: 1}}\n",
)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng; .ci/run does)")
def test_synthetic_voices_only_ever_train_in_a_search(small_data, cache_dir, tmp_path, capsys):
    cfg = tmp_path / "voices.yaml"
    cfg.write_text(VOICES_TINY)
    argv = ["--config", str(cfg), "--data-dir", str(small_data), "--cache-dir", str(cache_dir), "--out", str(tmp_path / "runs"),
            "--budget-kb", "3", "--trials", "2", "--time-budget", "8m"]  # fmt: skip
    assert main(argv + ["--name", "v"]) == 0
    run_dir = tmp_path / "runs" / "v"
    settings = json.loads((run_dir / "search.json").read_text())
    assert settings["base"]["voices"]["synth"]["engines"] == ["espeak"]
    summary = json.loads((run_dir / "pareto.json").read_text())
    from search.artifact import read

    for row in summary["front"]:
        assert [f["speaker"] for f in row["folds"]] == ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
        meta, _ = read(run_dir / row["artifact"])
        assert json.loads(meta["voices"]) == {"corpora": [{"clips": 40, "name": "synthetic"}]}  # 2 accents x 2 voices x 10 digits
        assert json.loads(meta["corpora"]) == [{"clips": 240, "name": "fsdd"}] and row["verify_agree"] == 1.0
        assert len(json.loads((run_dir / row["artifact"]).with_suffix(".predictions.json").read_text())) == 240  # real clips only
    capsys.readouterr()
    assert main(argv + ["--name", "off", "--no-synthetic-voices"]) == 0
    assert json.loads((tmp_path / "runs" / "off" / "search.json").read_text())["base"]["voices"]["synth"] is None


def test_a_rung_on_the_last_epoch_never_stops_a_trained_trial():
    from search.tuner import DominatedAtRung

    stop = DominatedAtRung(first_rung=2, k=1, factor=3)  # rungs at 2, 6, 18: base epochs 6 ends on a rung
    assert stop("a", {"training_iteration": 6, "size_bytes": 100, "val_acc": 0.9, "trained": 0}) is False
    # Dominated at the rung, but it has trained all its epochs: kept.
    assert stop("b", {"training_iteration": 6, "size_bytes": 200, "val_acc": 0.5, "trained": 1}) is False
    assert stop("c", {"training_iteration": 6, "size_bytes": 200, "val_acc": 0.5, "trained": 0}) is True
    assert stop.stopped == {"c"}


def test_trial_counts_tell_stopped_early_from_interrupted():
    from types import SimpleNamespace

    from search.tuner import trial_counts

    def trial(tid, status, **last):
        return SimpleNamespace(trial_id=tid, status=status, last_result=last)

    trials = [
        trial("fin", "TERMINATED", final=1),
        trial("inf", "TERMINATED", final=1, infeasible=1),
        trial("dom", "TERMINATED", final=0),
        trial("ctrl-c", "TERMINATED", final=0, training_iteration=2),  # ended by Ctrl-C or the time budget, not by the stopper
        trial("cut", "TERMINATED", trial_id="cut", node_ip="10.0.0.1"),  # Ray's defaults only: it never reported
        trial("paused", "PAUSED", final=0, training_iteration=1),
        trial("err", "ERROR"),
        trial("run", "RUNNING"),
    ]
    c = trial_counts(trials, stopped_early={"dom"})
    assert c == {
        "finished": 1, "infeasible": 1, "stopped_early": 1, "interrupted": 2, "unreported": 1, "failed": 1, "running": 1, "pending": 0,
    }  # fmt: skip


def test_progress_line_in_a_log_file_when_counts_change_and_every_so_often(capsys, monkeypatch):
    from types import SimpleNamespace

    from search.tuner import Progress, TimeLimit

    clock = [1000.0]
    monkeypatch.setattr("search.tuner.time.time", lambda: clock[0])
    p = Progress(trials=4, limit=TimeLimit(600), every_s=30)
    p.tty = False
    running = [SimpleNamespace(trial_id="a", status="RUNNING", last_result={}, experiment_tag="1_x", config={})]
    for _ in range(5):  # the time left changes each second; the counts do not: one line
        p.on_step_end(0, running)
        clock[0] += 1
    assert len(capsys.readouterr().out.splitlines()) == 1
    clock[0] += 31  # then one every 30 s
    p.on_step_end(0, running)
    assert len(capsys.readouterr().out.splitlines()) == 1
    done = [SimpleNamespace(trial_id="a", status="TERMINATED", last_result={"final": 1, "infeasible": 1}, experiment_tag="1_x", config={})]
    p.on_step_end(0, done)  # the counts changed: at once
    assert "1 infeasible" in capsys.readouterr().out


def settings_json(tmp_path) -> str:
    from fsdd.schema import dump
    from search.schema import Budget, Config, RunSettings, Space

    return json.dumps(dump(RunSettings(name="x", budget=Budget(1000), base=Config(), space=Space(), trials=3, time_budget_s=60.0)))


def record_json(**changes) -> dict:
    from fsdd.schema import dump
    from search.schema import Config, TrialRecord

    r = TrialRecord("t", "0001-fp32-h4", {"quant": "fp32"}, Config(), "fp32", 100, 100, 0.5, 1.0)
    return dump(r) | changes


def test_export_bad_run_folders_one_line(tmp_path, capsys):
    from search.export import main as export_main

    cases = {"empty": None, "garbage": "{not json", "list": "[1, 2]", "partial": json.dumps({"name": "x"})}
    for name, text in cases.items():
        d = tmp_path / name
        d.mkdir()
        if text is not None:
            (d / "search.json").write_text(text)
        assert export_main([str(d)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (name, err)
    # A run whose trials/ is gone (or is a file) keeps its exported front: refused, not emptied.
    for kind in ("missing", "file"):
        d = tmp_path / f"no-trials-{kind}"
        (d / "artifacts").mkdir(parents=True)
        (d / "artifacts" / "00-kept.safetensors").write_text("x")
        (d / "pareto.json").write_text('{"front": ["kept"]}')
        (d / "search.json").write_text(settings_json(tmp_path))
        if kind == "file":
            (d / "trials").write_text("")
        assert export_main([str(d)]) == 2, kind
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "trials" in err, err
        assert (d / "artifacts" / "00-kept.safetensors").exists() and "kept" in (d / "pareto.json").read_text()
        assert not (d / ".artifacts.new").exists()


def test_a_refit_is_reused_for_its_own_configuration_only(tmp_path, monkeypatch):
    """Export reuses a refit (no retraining) when refit.json says it is of this configuration, also
    with no test speaker (test_acc null); another configuration's, or a refit.json cut short by a
    killed export, is refit again."""
    from fsdd.schema import load
    from search.deploy.synthetic import random_artifact
    from search.protocol import SpeakerFolds
    from search.schema import Refit, TrialRecord, write_shape

    record = load(TrialRecord, record_json(config={"train": {"split": "speakers"}}))
    protocol = SpeakerFolds()
    refit = Refit(protocol.refit_config(record.config), None, 0.9, 1.0, "train")
    random_artifact(refit.config, tmp_path / "model.safetensors")
    write_shape(tmp_path / "refit.json", refit)

    def no_training(*args, **kwargs):
        raise RuntimeError("trained again")

    monkeypatch.setattr("search.protocol.make_datamodule", no_training)
    assert protocol.deployable(record, tmp_path, tmp_path, None, None) == (tmp_path, refit)
    other = load(TrialRecord, record_json(config={"train": {"split": "speakers", "seed": 1}}))
    with pytest.raises(RuntimeError, match="trained again"):
        protocol.deployable(other, tmp_path, tmp_path, None, None)
    (tmp_path / "refit.json").write_text((tmp_path / "refit.json").read_text()[:40])
    with pytest.raises(RuntimeError, match="trained again"):
        protocol.deployable(record, tmp_path, tmp_path, None, None)
    write_shape(tmp_path / "refit.json", refit)
    (tmp_path / "model.safetensors").write_bytes(b"cut")  # its model unreadable
    with pytest.raises(RuntimeError, match="trained again"):
        protocol.deployable(record, tmp_path, tmp_path, None, None)


def test_an_export_never_empties_a_front_it_cannot_rebuild(tmp_path, capsys):
    """Every record gone or unreadable (trials/ emptied): the old front stays, one line."""
    from search.export import main as export_main

    (tmp_path / "trials" / "0001-fp32-h4").mkdir(parents=True)
    (tmp_path / "trials" / "0001-fp32-h4" / "record.json").write_text('{"val_acc": 0.5, "size_b')
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "00-kept.safetensors").write_text("x")
    (tmp_path / "pareto.json").write_text('{"front": [{"rank": 0}]}')
    (tmp_path / "search.json").write_text(settings_json(tmp_path))
    assert export_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: ") and "kept as it was" in err[-1]
    assert (tmp_path / "artifacts" / "00-kept.safetensors").exists() and '"rank": 0' in (tmp_path / "pareto.json").read_text()


def test_an_unreadable_trial_record_is_left_out_with_a_warning(tmp_path, capsys):
    from search.runfolder import records

    good, cut = tmp_path / "trials" / "0001-fp32-h4", tmp_path / "trials" / "0002-fp32-h8"
    for d in (good, cut):
        d.mkdir(parents=True)
    (good / "record.json").write_text(json.dumps(record_json()))
    (cut / "record.json").write_text('{"val_acc": 0.5, "size_b')  # a process killed mid-write (before writes were atomic)
    # Records edited or damaged into the wrong types or values: each left out, not a traceback later.
    fold = {"speaker": "george", "n": 10, "correct": 5, "loss_sum": 1.0, "confusion": [[1] * 10] + [[0] * 10] * 9}
    lies = [
        record_json(cost_bytes="672"),
        record_json(val_loss="2.3"),
        record_json(val_acc=float("inf")),
        record_json(folds=[fold | {"confusion": "x"}]),
        record_json(folds=[fold | {"n": 0}]),
        record_json(size_bytes=10**400),
        record_json(sparsity="abc"),
        record_json(split_hash={"a": 1}),
        record_json(config={"model": {"hidden_size": -1}}),
        {k: v for k, v in record_json().items() if k != "quant"},
    ]
    for k, lie in enumerate(lies):
        d = tmp_path / "trials" / f"{k + 3:04d}-fp32-h4"
        d.mkdir()
        (d / "record.json").write_text(json.dumps(lie))
    assert [r.trial_name for r in records(tmp_path)] == ["0001-fp32-h4"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 + len(lies) and "0002-fp32-h8" in err and "left out" in err


RANDOM_TINY = TINY.replace("train: {epochs: 2, batch_size: 32}", "train: {epochs: 2, batch_size: 32, split: random}")


def tiny_args(tmp_path, small_data, cache_dir, name, *extra):
    cfg = tmp_path / "tiny-random.yaml"
    cfg.write_text(RANDOM_TINY)
    return ["--config", str(cfg), "--data-dir", str(small_data), "--cache-dir", str(cache_dir), "--out", str(tmp_path / "runs"),
            "--name", name, "--budget-kb", "2", "--trials", "1", "--time-budget", "5m", *extra]  # fmt: skip


def test_a_search_that_cannot_start_says_why_and_leaves_nothing_behind(tmp_path, small_data, cache_dir, capsys, monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise OSError("AF_UNIX path length cannot exceed 107 bytes: '/tmp/" + "x" * 90 + "/session_x/sockets/plasma_store'")

    monkeypatch.setattr(ray, "init", refuse)
    argv = tiny_args(tmp_path, small_data, cache_dir, "nostart")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Ray could not start") and "AF_UNIX" in err
    assert not (tmp_path / "runs" / "nostart").exists()  # nothing that blocks the next attempt
    # --resume of a run whose settings cannot be read is one line too.
    (tmp_path / "runs" / "never").mkdir(parents=True)
    (tmp_path / "runs" / "never" / "search.json").write_text("{}")
    assert main(["--resume", "--name", "never", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be resumed" in err


def test_a_long_tmpdir_moves_rays_files_to_a_short_one(tmp_path, monkeypatch):
    from search.tuner import SOCKET_SUFFIX, short_temp_dir

    long_dir = tmp_path / ("t" * (110 - len(str(tmp_path)) - SOCKET_SUFFIX + 20))
    long_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(long_dir))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read $TMPDIR
    short = short_temp_dir()
    assert short is not None and len(short) + SOCKET_SUFFIX <= 107 and Path(short).is_dir()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert short_temp_dir() is None or len(str(tmp_path)) + 4 + SOCKET_SUFFIX > 107


@pytest.mark.slow
def test_long_tmpdir_search_runs_and_impossible_cpus_are_one_line(tmp_path, small_data, cache_dir, capsys, monkeypatch):
    import tempfile

    long_dir = tmp_path / ("t" * max(1, 80 - len(str(tmp_path))))
    long_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(long_dir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert main(tiny_args(tmp_path, small_data, cache_dir, "longtmp")) == 0
    out = capsys.readouterr().out
    assert "too long for Ray's sockets" in out and (tmp_path / "runs" / "longtmp" / "pareto.json").is_file()
    monkeypatch.undo()
    # More CPUs per trial than any node has: refused at once, in one line, and nothing left behind.
    cpus = str((os.cpu_count() or 1) + 2)
    assert main(tiny_args(tmp_path, small_data, cache_dir, "toomany", "--cpus-per-trial", cpus)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--cpus-per-trial {cpus} cannot be placed" in err
    assert not (tmp_path / "runs" / "toomany").exists()
    # A run folder with settings but no saved search state (it never got going): one line on --resume.
    never = tmp_path / "runs" / "longtmp"
    for f in never.glob("*.pkl"):
        f.unlink()
    for f in never.glob("experiment_state*.json"):
        f.unlink()
    assert main(["--resume", "--name", "longtmp", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no saved search state" in err


@pytest.mark.slow
def test_resume_of_damaged_ray_state_is_one_line_and_keeps_the_run(tmp_path, small_data, cache_dir, capsys):
    """Ray's saved state, damaged: Ray itself would log a traceback and start the search over; the
    resume is refused in one line (Ray's own verdict), the trials and the exported front kept."""
    assert main(tiny_args(tmp_path, small_data, cache_dir, "r")) == 0
    run = tmp_path / "runs" / "r"
    front = json.loads((run / "pareto.json").read_text())["front"]
    assert front
    for pattern, damage in (("experiment_state-*.json", lambda b: b[:300]), ("searcher-state-*.pkl", lambda b: b[:100]),
                            ("experiment_state-*.json", lambda b: b"{}")):  # fmt: skip
        copy = tmp_path / "runs" / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(run, copy)
        (state,) = copy.glob(pattern)
        state.write_bytes(damage(state.read_bytes()))
        argv = ["--resume", "--name", "copy", "--out", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)]
        env = os.environ | {"FSDD_DIR": str(small_data)}
        r = subprocess.run([sys.executable, "-m", "search.run", *argv], capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (pattern, r.stderr[-2000:])
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "search.export" in last and "Ray cannot restore" in last, last
        assert sorted(p.name for p in (copy / "trials").iterdir()) == sorted(p.name for p in (run / "trials").iterdir())
        assert json.loads((copy / "pareto.json").read_text())["front"] == front
