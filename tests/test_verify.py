"""search.verify: the numpy reference (features, LSTM) against torch, end to end against
search.train, and its one-line errors on bad artifacts."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fsdd.audio import read_wav
from fsdd.features import clip_features, mfcc_transform
from fsdd.schema import FeatureConfig
from search import artifact, verify
from search.model import LSTMClassifier
from search.schema import N_CLASSES, from_dict
from search.size import layout, size_bytes

REPO_ROOT = Path(__file__).resolve().parents[1]
FSDD_DIR = os.environ.get("FSDD_DIR")
needs_fsdd = pytest.mark.skipif(not FSDD_DIR, reason="set FSDD_DIR to the FSDD recordings folder")


def fsdd_files() -> list[Path]:
    return sorted(Path(FSDD_DIR).glob("*.wav"))


def run_main(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, list[str], list[str]]:
    rc = verify.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err.splitlines()


# --------------------------------------------------------------------------- features


@needs_fsdd
@pytest.mark.parametrize(
    "cfg",
    [
        FeatureConfig(),
        FeatureConfig(n_fft=512, win_length=300, hop_length=100, n_mels=32, n_mfcc=20, f_min=60.0, f_max=3800.0),
        FeatureConfig(trim_db=None, n_mels=24),
        FeatureConfig(top_db=40.0, trim_db=20.0),
    ],
    ids=["default", "win<n_fft,fmin,fmax", "no-trim", "top_db=40"],
)
def test_mfcc_matches_torchaudio(cfg: FeatureConfig) -> None:
    files = fsdd_files()
    # ~20 clips across digits and speakers, plus the smallest files (padded to n_fft after trimming).
    picks = files[:: max(1, len(files) // 18)] + sorted(files, key=lambda f: f.stat().st_size)[:2]
    transform = mfcc_transform(cfg)
    for f in picks:
        x = read_wav(f)
        want = clip_features(x, cfg, transform).numpy()
        got = verify.mfcc(x, cfg)
        assert got.shape == want.shape and got.dtype == np.float32, f.name
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * np.abs(want).max(), err_msg=f.name)


# --------------------------------------------------------------------------- network


def test_lstm_matches_torch_model() -> None:
    rng = np.random.default_rng(0)
    h, n_in = 8, 13
    net = LSTMClassifier(n_in, h).eval()
    state = {k: torch.from_numpy(rng.normal(0, 0.5, v.shape).astype(np.float32)) for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    weights = {
        "lstm.weight_ih": state["lstm.weight_ih_l0"].numpy(),
        "lstm.weight_hh": state["lstm.weight_hh_l0"].numpy(),
        "lstm.bias": (state["lstm.bias_ih_l0"] + state["lstm.bias_hh_l0"]).numpy(),
        "fc.weight": state["fc.weight"].numpy(),
        "fc.bias": state["fc.bias"].numpy(),
    }
    for t in (1, 2, 17, 120):
        x = rng.normal(0, 1, (t, n_in)).astype(np.float32)
        with torch.no_grad():
            want = net(torch.from_numpy(x)[None], torch.tensor([t]))[0].numpy()
        np.testing.assert_allclose(verify.lstm_logits(x, weights), want, rtol=0, atol=1e-5)


def test_pack_bits_order_matches_spec() -> None:
    # docs/artifact.md: codes [1, -1, 3] at 4 bits -> bytes 0xF1 0x03; at 3 bits -> 0xF9 0x00
    assert artifact.pack_bits(np.array([1, -1, 3]), 4).tolist() == [0xF1, 0x03]
    assert artifact.pack_bits(np.array([1, -1, 3]), 3).tolist() == [0b11111001, 0b0]
    assert artifact.unpack_bits(np.array([0xF9, 0x00], dtype=np.uint8), 3, 3).tolist() == [1, -1, 3]


# --------------------------------------------------------------------------- end to end

MODES = {
    "fp32": {},
    "fp32-pruned": {"prune": {"schedule": [[0, 0.5]]}},
    "ptq_int8": {"quant": {"mode": "ptq_int8"}},
    "qat4-po2": {"quant": {"mode": "qat", "bits": 4, "scale": "po2", "warm_start": False}},
    "qat3-float-pc": {"quant": {"mode": "qat", "bits": 3, "scale": "float", "per_channel": True, "warm_start": False}},
    # Format version 2: per-utterance CMVN, and the speaker protocol's refit on every clip (`all`).
    "cmvn-meanvar": {"features": {"cmvn": "meanvar"}},
    "cmvn-mean-qat5": {"features": {"cmvn": "mean"}, "quant": {"mode": "qat", "bits": 5, "scale": "po2", "warm_start": False}},
    "refit-all": {"features": {"cmvn": "meanvar"}, "train": {"split": "all"}},
    "refit-test-speaker": {"features": {"cmvn": "meanvar"}, "train": {"split": "loso:theo"}},
}


@pytest.fixture(scope="module")
def small_fsdd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 clips: 6 per digit, each from another speaker (symlinks into FSDD_DIR)."""
    src = Path(FSDD_DIR)
    speakers = sorted({f.name.split("_")[1] for f in src.glob("*.wav")})
    d = tmp_path_factory.mktemp("fsdd")
    for digit in range(10):
        for k in range(6):
            name = f"{digit}_{speakers[(digit + k) % len(speakers)]}_{k}.wav"
            (d / name).symlink_to(src / name)
    return d


@pytest.fixture(scope="module")
def trained(small_fsdd: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    from search.fit import quiet
    from search.protocol import run_one

    quiet()
    cache = tmp_path_factory.mktemp("cache")
    results = {}
    for mode, extra in MODES.items():
        # Small batches and a high learning rate: 2 epochs that still give varied predictions.
        train_cfg = {"epochs": 2, "batch_size": 4, "lr": 0.02} | extra.get("train", {})
        cfg = from_dict({"model": {"hidden_size": 8}, **extra, "train": train_cfg})
        out = tmp_path_factory.mktemp(mode)
        results[mode] = run_one(cfg, small_fsdd, out, cache_dir=cache)[0] | {"cfg": cfg}
    return results


@needs_fsdd
@pytest.mark.parametrize("mode", list(MODES))
def test_end_to_end(mode: str, trained: dict, small_fsdd: Path, capsys: pytest.CaptureFixture) -> None:
    result = trained[mode]
    path = Path(result["artifact"])
    preds = path.parent / "predictions.json"
    assert preds.is_file(), "search.train writes predictions.json beside the artifact"
    rc, out, err = run_main(capsys, path, "--data-dir", small_fsdd)
    assert rc == 0, err
    got = json.loads(out[-1])
    assert got["size_bytes"] == result["size_bytes"] == size_bytes(result["cfg"]) == artifact.payload_bytes(path)
    assert got["n_test"] == len(json.loads(preds.read_text())) == got["n_compared"]
    assert got["format_version"] == artifact.FORMAT_VERSION
    if mode == "refit-all":  # no test set: the training clips are checked for agreement
        assert got["test_acc"] is None and result["test_acc"] is None and got["n_test"] == 60
        assert got["agree"] == 1.0
        return
    if mode == "ptq_int8":
        # The torch model quantizes activations at run time; the reference does not.
        assert got["agree"] >= 0.9 and abs(got["test_acc"] - result["test_acc"]) <= 1 - got["agree"]
    else:
        assert got["test_acc"] == result["test_acc"]
        assert got["agree"] == 1.0
    # An explicit --predictions file is used instead of the one beside the artifact.
    flipped = {k: (v + 1) % N_CLASSES for k, v in json.loads(preds.read_text()).items()}
    other = path.parent / "flipped.json"
    other.write_text(json.dumps(flipped))
    rc, out, _ = run_main(capsys, path, "--data-dir", small_fsdd, "--predictions", other)
    assert rc == 0 and json.loads(out[-1])["agree"] <= 1 - got["agree"] + 1e-9


@needs_fsdd
def test_format_version_1_still_verifies(fsdd_dir: Path, tmp_path: Path, capsys) -> None:
    # tests/data/v1-*.safetensors was written by the format-1 exporter (commit cc292ff), trained
    # on takes 0-3 of every digit and speaker; its predictions.json are that torch model's.
    data = tmp_path / "recordings"
    data.mkdir()
    for f in fsdd_dir.glob("*.wav"):
        if int(f.stem.split("_")[2]) < 4:
            (data / f.name).symlink_to(f)
    v1 = REPO_ROOT / "tests" / "data" / "v1-qat4-po2-h16.safetensors"
    meta, _ = artifact.read(v1)
    assert meta["format_version"] == "1" and "cmvn" not in json.loads(meta["features"])
    rc, out, err = run_main(capsys, v1, "--data-dir", data)
    assert rc == 0, err
    got = json.loads(out[-1])
    assert got["format_version"] == "1" and got["agree"] == 1.0 and got["n_compared"] == 40 and got["test_acc"] == 0.625


@needs_fsdd
def test_no_predictions_gives_null_agree(trained: dict, small_fsdd: Path, tmp_path: Path, capsys) -> None:
    src = Path(trained["fp32"]["artifact"])
    lone = tmp_path / "model.safetensors"
    lone.write_bytes(src.read_bytes())
    rc, out, _ = run_main(capsys, lone, "--data-dir", small_fsdd)
    assert rc == 0 and json.loads(out[-1])["agree"] is None
    (tmp_path / "bad.json").write_text("[1, 2]")
    for bad in (tmp_path / "absent.json", tmp_path / "bad.json"):
        rc, out, err = run_main(capsys, lone, "--data-dir", small_fsdd, "--predictions", bad)
        assert rc == 2 and out == [] and len(err) == 1 and err[0].startswith("error: "), err


@needs_fsdd
def test_split_checks(trained: dict, small_fsdd: Path, tmp_path: Path, capsys) -> None:
    path = Path(trained["fp32"]["artifact"])
    # Another data dir gives another split hash: refused, unless --split overrides.
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for f in sorted(small_fsdd.glob("*.wav"))[1:]:
        (fewer / f.name).symlink_to(f.resolve())
    rc, out, err = run_main(capsys, path, "--data-dir", fewer)
    assert rc == 2 and out == [] and len(err) == 1 and err[0].startswith("error: ") and "hash" in err[0]
    speaker = sorted(fewer.glob("*.wav"))[0].stem.split("_")[1]
    rc, out, err = run_main(capsys, path, "--data-dir", fewer, "--split", f"speaker:{speaker}")
    assert rc == 0, err
    got = json.loads(out[-1])
    assert got["n_test"] == len(list(fewer.glob(f"*_{speaker}_*.wav"))) and got["split"] == f"speaker:{speaker}"
    rc, out, err = run_main(capsys, path, "--data-dir", small_fsdd, "--split", "speaker:nobody")
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ")


# --------------------------------------------------------------------------- bad artifacts


def synthetic_artifact(path: Path, **meta_changes: str) -> Path:
    """A valid qat artifact from random weights (no data or training needed)."""
    cfg = from_dict({"model": {"hidden_size": 4}, "quant": {"mode": "qat", "bits": 4, "scale": "po2"}})
    rng = np.random.default_rng(1)
    shapes = {"lstm.weight_ih": (16, 13), "lstm.weight_hh": (16, 4), "fc.weight": (10, 4)}
    floats = {k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in shapes.items()}
    codes = {k: (rng.integers(-7, 8, s), np.array([0.125])) for k, s in shapes.items()}
    biases = {"lstm.bias": np.zeros(16, np.float32), "fc.bias": np.zeros(10, np.float32)}
    norm = (np.zeros(13, np.float32), np.ones(13, np.float32))
    tensors = artifact.build_payload(cfg, floats, biases, norm, codes)
    meta = artifact.metadata(cfg, "0123456789ab", 0, [{"name": "fsdd", "clips": 3000}]) | meta_changes
    artifact.write(path, tensors, meta)
    return path


def test_synthetic_artifact_decodes(tmp_path: Path) -> None:
    path = synthetic_artifact(tmp_path / "ok.safetensors")
    meta, t = artifact.read(path)
    artifact.validate(meta, t, path)
    w = artifact.dense_weights(meta, t)
    assert w["lstm.weight_ih"].shape == (16, 13) and set(np.unique(w["fc.weight"] / 0.125)) <= set(range(-7, 8))


def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = synthetic_artifact(tmp_path / "good.safetensors").read_bytes()
    files = {
        "truncated": good[:-7],
        "header-cut": good[:40],
        "empty": b"",
        "text": b"this is not a safetensors file\n" * 4,
        "json-list-header": struct.pack("<Q", 2) + b"[]",
        "wav": b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28),
    }
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / f"{name}.safetensors"
        out[name].write_bytes(data)
    out["wrong-version"] = synthetic_artifact(tmp_path / "v9.safetensors", format_version="9")
    out["wrong-format"] = synthetic_artifact(tmp_path / "fmt.safetensors", format="other")
    out["bad-config"] = synthetic_artifact(tmp_path / "cfg.safetensors", config=json.dumps({"model": {"hidden_size": 5}}))
    meta, tensors = artifact.read(tmp_path / "good.safetensors")
    out["missing-tensor"] = tmp_path / "lacks.safetensors"
    artifact.write(out["missing-tensor"], {k: v for k, v in tensors.items() if k != "fc.bias"}, meta)
    out["missing"] = tmp_path / "nowhere.safetensors"
    return out


def test_bad_artifacts_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name, path in bad_files(tmp_path).items():
        rc, out, err = run_main(capsys, path, "--data-dir", tmp_path)
        assert rc == 2, name
        assert out == [] and len(err) == 1 and err[0].startswith("error: "), (name, err)
    assert "version" in run_main(capsys, tmp_path / "v9.safetensors")[2][0]


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(synthetic_artifact(tmp_path / "a.safetensors").read_bytes()[:-3])
    p = subprocess.run(
        [sys.executable, "-m", "search.verify", str(bad), "--data-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and p.stdout == ""
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr


def test_size_worked_examples() -> None:
    # docs/artifact.md's worked examples: h=8, 13 MFCCs.
    cfg = from_dict({"model": {"hidden_size": 8}, "quant": {"mode": "qat", "bits": 4, "scale": "po2"}})
    assert size_bytes(cfg) == 52 + 52 + 208 + 1 + 128 + 1 + 40 + 1 + 128 + 40 == 651
    pruned = cfg.replace(quant={"bits": 3, "per_channel": True, "scale": "float"}, prune={"schedule": [[0, 0.9]]})
    sparse = {e.name: (e.dtype, e.shape) for e in layout(pruned) if e.name.endswith((".mask", ".index", ".q"))}
    assert sparse == {
        "lstm.weight_ih.q": ("uint8", (16,)),  # 42 kept x 3 bits = 126 bits
        "lstm.weight_ih.mask": ("uint8", (52,)),  # 52 <= 42 x 2 (uint16 indices into 416)
        "lstm.weight_hh.q": ("uint8", (10,)),  # 26 kept x 3 bits = 78 bits
        "lstm.weight_hh.index": ("uint8", (26,)),  # mask 32 > 26 x 1 (uint8 indices into 256)
        "fc.weight.q": ("uint8", (3,)),  # 8 kept x 3 bits = 24 bits
        "fc.weight.index": ("uint8", (8,)),  # mask 10 > 8 x 1
    }
    assert size_bytes(pruned) == 52 + 52 + (16 + 128 + 52) + (10 + 128 + 26) + (3 + 40 + 8) + 128 + 40 == 683
