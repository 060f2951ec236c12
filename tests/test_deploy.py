"""search.deploy: the generated C library against the numpy reference (host, every mode), the
Cortex-M4 build under QEMU against the host build, flash/RAM measurement and its predictor, and
one-line errors on bad input.

Host tests need `cc` and FSDD_DIR; device tests also need gcc-arm-none-eabi,
libnewlib-arm-none-eabi and qemu-system-arm (they skip, naming the packages, without them)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fsdd.audio import list_wavs, read_wav
from fsdd.splits import make_split
from search import verify
from search.artifact import read
from search.config import Config, from_dict
from search.deploy import DeployError, check_device, check_host, deploy, measure, predict_flash
from search.deploy.__main__ import main
from search.deploy.calibrate import CORNERS, measure_config, spread
from search.deploy.clips import split_clips
from search.deploy.frontend import front_end
from search.deploy.measure import measure_folder
from search.deploy.spec import load
from search.deploy.synthetic import random_artifact
from search.deploy.toolchain import DEVICE_PACKAGES, device_tools_missing
from search.size import size_bytes

# |C logit - numpy logit| <= ATOL + RTOL * |numpy logit|. The C library runs the whole pipeline in
# float32 (the reference in float64): MFCCs agree to ~1e-6 relative, and the LSTM carries that
# through its steps. Measured over every mode here and trained models: at most 1.3e-5.
ATOL, RTOL = 1e-4, 1e-4

needs_cc = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("make") is None, reason="needs cc and make")
DEVICE_MISSING = device_tools_missing()
needs_device = pytest.mark.skipif(
    DEVICE_MISSING is not None, reason=f"{DEVICE_MISSING}; the device tests need the Debian packages {DEVICE_PACKAGES}"
)

SMALL = {"n_fft": 256, "hop_length": 128, "n_mels": 20, "n_mfcc": 10}  # the small target model's front end
QAT4 = {"mode": "qat", "bits": 4, "scale": "po2"}


def qat(bits: int, scale: str, per_channel: bool) -> dict:
    return {"mode": "qat", "bits": bits, "scale": scale, "per_channel": per_channel}


N512 = {"n_fft": 512, "hop_length": 200, "n_mels": 40, "n_mfcc": 13, "f_min": 60.0, "f_max": 3800.0}
N1024 = {"n_fft": 1024, "hop_length": 256, "n_mels": 32, "cmvn": "meanvar"}
# Every artifact mode and front-end option (id -> quant, prune schedule, feature changes, hidden size).
MODES: dict[str, tuple[dict, list, dict, int]] = {
    "fp32": ({"mode": "fp32"}, [], {}, 8),
    "ptq_int8": ({"mode": "ptq_int8"}, [], {}, 8),
    **{
        f"qat{b}-{s}-{'channel' if pc else 'tensor'}": (qat(b, s, pc), [], {}, 8)
        for b in range(2, 9)
        for s in ("po2", "float")
        for pc in (False, True)
    },
    # 50 %: every matrix stores a mask; 93 %: lstm.weight_ih a mask, the other two uint8 indices.
    "fp32-mask": ({"mode": "fp32"}, [[0, 0.5]], {}, 8),
    "fp32-index": ({"mode": "fp32"}, [[0, 0.93]], {}, 8),
    "ptq_int8-mask": ({"mode": "ptq_int8"}, [[0, 0.5]], {}, 8),
    "ptq_int8-index": ({"mode": "ptq_int8"}, [[0, 0.93]], {}, 8),
    "qat3-float-channel-mask": (qat(3, "float", True), [[0, 0.5]], {}, 8),
    "qat5-po2-index": (qat(5, "po2", False), [[0, 0.93]], {}, 8),
    "qat4-index-uint16": (QAT4, [[0, 0.97]], {}, 24),  # weight_hh: 2304 weights, 69 kept: uint16 indices
    "cmvn-mean": (QAT4, [], {"cmvn": "mean"}, 8),
    "cmvn-meanvar": (QAT4, [], {"cmvn": "meanvar"}, 8),
    "top_db-null": (QAT4, [], {"top_db": None}, 8),
    "trim_db-null": (QAT4, [], {"trim_db": None}, 8),
    "win_length-200": (QAT4, [], {"win_length": 200}, 8),
    "n_fft-128": (QAT4, [], {"n_fft": 128, "hop_length": 64, "n_mels": 16}, 8),
    "n_fft-512-fmin-fmax": (QAT4, [], N512, 16),
    "n_fft-1024": (QAT4, [], N1024, 8),
    # The other transform than auto's (the DFT up to n_fft 128, CMSIS-DSP's FFT above).
    "n_fft-128-fft": (QAT4, [], {"n_fft": 128, "hop_length": 64, "n_mels": 16}, 8),
    "dft": (QAT4, [], {}, 8),
    "dft-trim-top_db-null-win_length": (qat(2, "po2", False), [], {"trim_db": None, "top_db": None, "win_length": 200}, 4),
    "dft-n_fft-512-fmin-fmax": (QAT4, [], N512, 16),
    "dft-n_fft-1024": (QAT4, [], N1024, 8),
}
TRANSFORM = {"n_fft-128-fft": "fft"} | {m: "dft" for m in MODES if m.startswith("dft")}


def config(mode: str) -> Config:
    quant, schedule, changes, hidden = MODES[mode]
    raw = {"model": {"hidden_size": hidden}, "features": SMALL | changes, "quant": quant, "prune": {"schedule": schedule}}
    return from_dict(raw | {"train": {"epochs": 5}})


@pytest.fixture(scope="session")
def split_hash(small_data_shared: Path) -> str:
    return make_split([f.name for f in list_wavs(small_data_shared)], "random", 0).hash


@pytest.fixture(scope="session")
def deployed(small_data_shared: Path, split_hash: str, tmp_path_factory: pytest.TempPathFactory):
    """mode -> (artifact, library folder), deployed once per session; feature statistics of real
    clips as the normalisation, so that the LSTM sees inputs of the trained scale."""
    root = tmp_path_factory.mktemp("deployed")
    cache: dict[str, tuple[Path, Path]] = {}
    wavs = sorted(small_data_shared.glob("*.wav"))[::12]

    def get(mode: str) -> tuple[Path, Path]:
        if mode not in cache:
            cfg = config(mode)
            p = verify._params(cfg.features)
            feats = np.concatenate([verify.cmvn(verify.mfcc(read_wav(w), p), p.cmvn) for w in wavs])
            norm = (feats.mean(0).astype(np.float32), np.maximum(feats.std(0), 1e-3).astype(np.float32))
            path = random_artifact(cfg, root / f"{mode}.safetensors", seed=len(cache), norm=norm, split_hash=split_hash)
            deploy(path, root / mode, data_dir=small_data_shared, device_clips=3, transform=TRANSFORM.get(mode, "auto"))
            cache[mode] = (path, root / mode)
        return cache[mode]

    return get


# --------------------------------------------------------------------------- host


@needs_cc
@pytest.mark.parametrize("mode", list(MODES))
def test_host_matches_reference(mode: str, deployed, small_data_shared: Path) -> None:
    path, lib = deployed(mode)
    got = check_host(path, lib, small_data_shared)
    assert got.n_clips == 40  # the random split's test part of the 240-clip subset
    assert got.agree == got.n_clips, got
    assert got.max_logit_diff <= ATOL + RTOL * 10, got  # logits of these random models are within +-10


@needs_cc
def test_weights_are_the_payload(deployed) -> None:
    """The generated weight arrays are the artifact's tensors byte for byte, and nothing else."""
    for mode in ("qat3-float-channel-mask", "fp32-index", "ptq_int8"):
        path, lib = deployed(mode)
        spec = load(path)
        assert sum(spec.tensor_bytes.values()) == size_bytes(config(mode))
        source = (lib / "kws_model.c").read_text()
        for name, a in spec.tensors.items():
            assert f"{name}[{a.size}] = {{" in source
        assert source.count("const ") == len(spec.tensors) + len(spec.front.tables()) + 3  # + 3 matrix descriptors


@needs_cc
def test_exp_and_log_accuracy(deployed) -> None:
    """The library's own expf/logf (kws.c) against double precision."""
    _, lib = deployed("fp32")
    (lib / "mathtest.c").write_text(
        '#include "kws.c"\n#include <stdio.h>\n#include <math.h>\n'
        "int main(void) { double e = 0, l = 0; float x;\n"
        "  for (x = -87.0f; x <= 88.0f; x += 0.001f) {\n"
        "    double r = exp((double)x), d = fabs(kws_expf(x) - r) / r; if (d > e) e = d; }\n"
        "  for (x = 1e-10f; x < 1e10f; x *= 1.0001f) {\n"
        "    double r = log((double)x), d = fabs(kws_logf(x) - r); if (d > l) l = d; }\n"
        '  printf("%g %g\\n", e, l); return 0; }\n'
    )
    flags = "-std=c99 -O2 -ffp-contract=off -fno-math-errno -D__GNUC_PYTHON__ -I. -Icmsis/Include -Icmsis/PrivateInclude"
    fft = "cmsis/Source/TransformFunctions"
    srcs = f"mathtest.c kws_model.c {fft}/arm_cfft_radix8_f32.c {fft}/arm_bitreversal2.c cmsis/Source/CommonTables/arm_fft_tables_f32.c"
    cmd = f"cc {flags} -I{fft} {srcs} -o mathtest -lm && ./mathtest"
    out = subprocess.run(cmd, shell=True, cwd=lib, capture_output=True, text=True, check=True).stdout.split()
    exp_rel, log_abs = float(out[0]), float(out[1])
    assert exp_rel < 2e-7  # measured 9.6e-8: about one float32 ulp (6e-8 to 1.2e-7 relative)
    assert log_abs < 2e-6  # measured 1.0e-6; |ln x| <= 23 here, whose ulp is 1.9e-6


def test_mel_triangles_one_weight_per_bin() -> None:
    """Between two corner frequencies a bin feeds one filter's rising edge with w and the previous
    filter's falling edge with 1 - w: the reference's two slopes sum to 1 (here exactly), so one
    weight per bin, computed from the corners, loses nothing beyond float32 rounding."""
    for feats in (SMALL, {"n_fft": 512, "n_mels": 40, "n_mfcc": 13, "f_min": 60.0, "f_max": 3800.0, "hop_length": 200}):
        fe = front_end(from_dict({"features": feats}).features)
        pts = fe.tables()["kws_t_mel_pts"].astype(np.float64)
        fb = np.zeros((fe.n_fft // 2 + 1, fe.n_mels))
        for f in range(fe.n_fft // 2 + 1):
            hz = f * fe.bin_hz
            j = np.searchsorted(pts, hz, side="right") - 1
            if j < 0 or j > fe.n_mels:
                continue
            w = (hz - pts[j]) / (pts[j + 1] - pts[j])
            if j < fe.n_mels:
                fb[f, j] += w
            if j > 0:
                fb[f, j - 1] += 1 - w
        ref = verify.mel_filterbank(verify._params(from_dict({"features": feats}).features))
        assert np.max(np.abs(fb - ref)) < 1e-6
        inner = ref[:, 1:] + ref[:, :-1]  # adjacent filters on the bins between their peaks
        between = (ref[:, 1:] > 0) & (ref[:, :-1] > 0)
        assert np.max(np.abs(inner[between] - 1)) < 1e-12


def test_transform_choice(tmp_path: Path, capsys) -> None:
    """auto: kws.c's direct DFT up to n_fft 128 (a smaller library, more instructions), CMSIS-DSP's FFT
    above; either on request. The DFT's library has no CMSIS code and no CMSIS table."""
    for n_fft, want in ((64, "dft"), (128, "dft"), (256, "fft"), (1024, "fft")):
        assert front_end(from_dict({"features": {"n_fft": n_fft, "hop_length": n_fft // 2, "n_mels": 16}}).features).transform == want
    feats = from_dict({"features": SMALL}).features
    dft, fft = front_end(feats, transform="dft"), front_end(feats, transform="fft")
    assert dft.cmsis_tables() == {} and dft.table_bytes() == sum(t.nbytes for t in dft.tables().values())
    assert fft.table_bytes() - dft.table_bytes() == sum(fft.cmsis_tables().values()) > 0
    with pytest.raises(DeployError, match="transform"):
        front_end(feats, transform="fast")
    path = small_artifact(tmp_path / "m.safetensors", n_fft=128, hop_length=64, n_mels=16)
    cfg = load(path).cfg
    for transform, want in (("auto", "dft"), ("fft", "fft"), ("dft", "dft")):
        rc, lines, _ = run_main(capsys, path, "--out", tmp_path / transform, "--clips", "0", "--transform", transform)
        assert rc == 0
        header = (tmp_path / transform / "kws_model.h").read_text()
        assert f"#define KWS_DFT {int(want == 'dft')} " in header
        assert (tmp_path / transform / "cmsis").is_dir() == (want == "fft")
    assert predict_flash(cfg).flash_bytes == predict_flash(cfg, "dft").flash_bytes < predict_flash(cfg, "fft").flash_bytes - 1500


# --------------------------------------------------------------------------- device


@needs_device
@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_device_matches_host(mode: str, deployed, small_data_shared: Path) -> None:
    """Every mode builds for the Cortex-M4 and gives, under QEMU, the host's logits bit for bit (the
    same float32 operations in the same order, no contraction into fused multiply-adds, no libm)."""
    path, lib = deployed(mode)
    got = check_device(lib, split_clips(read(path)[0], small_data_shared))
    assert got.n_clips == 3 and got.same_pred == 3 and got.same_logits == 3, got
    flash = measure_folder(lib, load(path, TRANSFORM.get(mode, "auto")))  # links the objects `make qemu` compiled
    assert flash.weights_bytes == size_bytes(config(mode))
    assert 0 < got.stack_painted_bytes <= flash.stack_bytes  # the call-graph bound holds


@needs_device
def test_small_target_fits(deployed, small_data_shared: Path) -> None:
    """n_fft 256, 20 mels, 10 MFCCs, h 8, 4-bit QAT with meanvar CMVN (the most RAM): 8 KiB of
    flash and 2 KiB of RAM; the stack bound equals the painted stack; no static RAM."""
    path, lib = deployed("cmvn-meanvar")
    flash = measure(path)
    assert flash.weights_bytes == size_bytes(config("cmvn-meanvar"))
    assert flash.tables_bytes == front_end(config("cmvn-meanvar").features).table_bytes()
    assert flash.flash_bytes <= 8 * 1024 and flash.ram_bytes <= 2 * 1024, flash
    assert flash.static_bytes == 0
    got = check_device(lib, split_clips(read(path)[0], small_data_shared))
    assert got.same_logits == 3 and got.stack_painted_bytes == flash.stack_bytes


@needs_device
def test_dft_library_is_smaller(tmp_path: Path) -> None:
    """At every n_fft the DFT's library is smaller than the FFT's (no CMSIS kernel, no CMSIS tables);
    the smallest kind of front member (n_fft 128, h 4, 2-bit QAT, no trim or top_db) fits 4 KiB."""
    tiny = {"n_fft": 128, "hop_length": 64, "n_mels": 16, "n_mfcc": 8, "trim_db": None, "top_db": None}
    for n_fft in (128, 512):
        cfg = from_dict({"model": {"hidden_size": 4}, "features": tiny | {"n_fft": n_fft}, "quant": qat(2, "po2", False)})
        path = random_artifact(cfg, tmp_path / f"m{n_fft}.safetensors")
        dft, fft = measure(path, transform="dft"), measure(path, transform="fft")
        assert dft.tables_bytes == front_end(cfg.features, transform="dft").table_bytes()
        assert dft.code_bytes < fft.code_bytes - 1000 and dft.flash_bytes < fft.flash_bytes, (dft, fft)
        if n_fft == 128:
            assert measure(path) == dft and dft.flash_bytes < 4 * 1024 and dft.ram_bytes < 1024, dft


@needs_device
@pytest.mark.slow
def test_predict_flash_within_2_percent() -> None:
    """The predictor against real links, on configurations the calibration did not see (seed 1)."""
    worst = 0.0
    for cfg, transform in spread(CORNERS + 11, seed=1)[CORNERS:]:  # 11 random ones, both transforms among them
        _, got, _ = measure_config(cfg, seed=3, transform=transform)
        want = predict_flash(cfg, transform)
        assert want.weights_bytes == got.weights_bytes and want.tables_bytes == got.tables_bytes
        worst = max(worst, abs(want.flash_bytes - got.flash_bytes) / got.flash_bytes)
        assert abs(want.stack_bytes - got.stack_bytes) <= 32, (cfg, want, got)
    assert worst <= 0.02


# --------------------------------------------------------------------------- end to end


@needs_cc
@pytest.mark.slow
def test_trained_end_to_end(small_data: Path, tmp_path: Path, capsys) -> None:
    """search.train -> python -m search.deploy --check (--device --measure with the tools):
    every test clip as the numpy reference predicts it, and as torch did."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "model: {hidden_size: 8}\nfeatures: {n_fft: 256, hop_length: 200, n_mels: 20, n_mfcc: 10, cmvn: mean}\n"
        "train: {epochs: 3}\nquant: {mode: qat, bits: 4, scale: po2, warm_start: false}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "search.train", "--config", str(cfg), "--data-dir", str(small_data), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600, env=os.environ | {"FSDD_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    args = [str(tmp_path / "run" / "model.safetensors"), "--out", str(tmp_path / "lib"), "--data-dir", str(small_data), "--check"]
    if DEVICE_MISSING is None:
        args += ["--device", "--measure"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    host = result["host"]
    assert host["agree"] == host["n_clips"] == 40 and host["torch_agree"] == 1.0, host
    assert host["max_logit_diff"] <= ATOL + RTOL * 20
    if DEVICE_MISSING is None:
        assert result["device"]["same_logits"] == result["device"]["n_clips"] > 0
        assert result["flash"]["weights_bytes"] == result["size_bytes"]


# --------------------------------------------------------------------------- bad input


def run_main(capsys, *argv) -> tuple[int, list[str], list[str]]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err.splitlines()


def one_error(rc: int, out: list[str], err: list[str], *words: str) -> None:
    assert rc == 2 and out == [] and len(err) == 1 and err[0].startswith("error: "), (rc, out, err)
    assert all(w in err[0] for w in words), err[0]


def small_artifact(path: Path, **features) -> Path:
    return random_artifact(from_dict({"model": {"hidden_size": 4}, "features": SMALL | features, "quant": QAT4}), path)


def test_bad_artifacts(tmp_path: Path, capsys) -> None:
    good = small_artifact(tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(good[:-9])
    (tmp_path / "text.safetensors").write_bytes(b"not an artifact\n" * 8)
    header_len = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8 : 8 + header_len])
    for name, change in {"format": {"format": "other"}, "version": {"format_version": "9"}}.items():
        h = dict(header)
        h["__metadata__"] = header["__metadata__"] | change
        blob = json.dumps(h).encode()
        blob += b" " * (-len(blob) % 8)
        (tmp_path / f"{name}.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + good[8 + header_len :])
    cases = {"truncated": ("truncated",), "text": ("not a safetensors",), "format": ("fsdd-lstm",), "version": ("version",)}
    for name, words in cases.items():
        one_error(*run_main(capsys, tmp_path / f"{name}.safetensors", "--out", tmp_path / f"out-{name}"), *words)
        assert not (tmp_path / f"out-{name}").exists()
    one_error(*run_main(capsys, tmp_path / "missing.safetensors", "--out", tmp_path / "o"), "no such file")


def test_n_fft_not_a_power_of_two(tmp_path: Path, capsys) -> None:
    path = small_artifact(tmp_path / "m.safetensors", n_fft=400)
    one_error(*run_main(capsys, path, "--out", tmp_path / "out"), "features.n_fft", "400", "power of two", "256")
    with pytest.raises(DeployError, match="features.n_fft"):
        predict_flash(from_dict({"features": {"n_fft": 400}}))


def test_out_not_empty(tmp_path: Path, capsys) -> None:
    path = small_artifact(tmp_path / "m.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    one_error(*run_main(capsys, path, "--out", out, "--clips", "0"), "not empty", "--force")
    assert (out / "keep.txt").exists()
    rc, lines, _ = run_main(capsys, path, "--out", out, "--clips", "0", "--force")
    assert rc == 0 and not (out / "keep.txt").exists() and (out / "kws_model.c").is_file()
    assert json.loads(lines[-1])["size_bytes"] == size_bytes(load(path).cfg)


def test_missing_cross_compiler(tmp_path: Path, capsys, monkeypatch) -> None:
    """From Python (no arm-none-eabi-gcc on PATH) and from the Makefile: one line naming the Debian package."""
    path = small_artifact(tmp_path / "m.safetensors")
    deploy(path, tmp_path / "lib", device_clips=0)
    with monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path / "empty"))
        one_error(*run_main(capsys, path, "--out", tmp_path / "out2", "--device"), "arm-none-eabi-gcc", "gcc-arm-none-eabi")
        one_error(*run_main(capsys, path, "--out", tmp_path / "out3", "--measure"), "gcc-arm-none-eabi")
        with pytest.raises(DeployError, match="gcc-arm-none-eabi"):
            measure(path)
    if shutil.which("make") is None:
        return
    for target, var, package in (("device", "ARM_CC", "gcc-arm-none-eabi"), ("qemu", "QEMU", "qemu-system-arm")):
        if target == "qemu" and DEVICE_MISSING is not None:
            continue  # the image must build before QEMU is looked for
        cmd = ["make", "-s", "-C", str(tmp_path / "lib"), target, f"{var}=no-such-tool"]
        r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert r.returncode != 0 and f"no-such-tool not found: install the Debian package {package}" in r.stderr, r.stderr


def test_vendored_cmsis_is_complete() -> None:
    cmsis = Path(__file__).resolve().parents[1] / "search" / "deploy" / "cmsis"
    assert "Apache License" in (cmsis / "LICENSE").read_text()
    readme = (cmsis / "README.md").read_text()
    assert "1.10.3" in readme and "sha256 `307d3229" in readme and "python -m search.deploy.vendor" in readme
    tables = (cmsis / "Source" / "CommonTables" / "arm_fft_tables_f32.c").read_text()
    for n in (32, 64, 128, 256, 512):
        assert f"twiddleCoef_{n}[{2 * n}]" in tables and f"armBitRevIndexTable{n}[" in tables
