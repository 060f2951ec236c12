"""search.run end to end, with Ray on loopback: tiny searches (few clips, 2 epochs, 4-6 trials)."""

from __future__ import annotations

import json
import os
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
    """Last result of every trial Ray recorded, by trial id."""
    out = {}
    for f in run_dir.glob("*/result.json"):
        lines = f.read_text().strip().splitlines()
        if lines:
            last = json.loads(lines[-1])
            out[last["trial_id"]] = last
    return out


@pytest.mark.slow
def test_search_end_to_end_with_a_failing_trial(tiny_config, small_data, cache_dir, tmp_path, capsys):
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
    assert "1 failed" in out and "winner" in out
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
    # TensorBoard: Ray's per-trial logs (with hparams) and Lightning's curves are in the run dir.
    assert list(run_dir.glob("*/events.out.tfevents.*")) and list(run_dir.glob("trials/*/events.out.tfevents.*"))


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
        assert not (run_dir / "trials" / r["trial_id"] / "weights.safetensors").exists()


@pytest.mark.slow
def test_kill_then_resume_keeps_every_finished_trial(tiny_config, small_data, cache_dir, tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "search.run", *args(tiny_config, small_data, cache_dir, out, "kill", "--budget-kb", "4", "--trials", "8")]
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
    assert len(before) >= 2
    # A new run under the same name refuses rather than overwrites.
    assert main(["--budget-kb", "4", "--out", str(out), "--name", "kill", "--config", str(tiny_config)]) == 2
    code = main(["--resume", "--name", "kill", "--out", str(out), "--data-dir", str(small_data)])
    assert code == 0
    after = {f.parent.name for f in run_dir.glob("trials/*/record.json")}
    assert before <= after and len(after) > len(before)
    known = ray_trials(run_dir)
    assert before <= set(known)  # Ray's restored experiment still knows them
    assert json.loads((run_dir / "pareto.json").read_text())["front"]


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
