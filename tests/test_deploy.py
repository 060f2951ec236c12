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
import wave
from pathlib import Path

import numpy as np
import pytest

from fsdd.audio import list_wavs, read_wav
from fsdd.splits import make_split
from search import artifact, verify
from search.artifact import read
from search.deploy import DeployError, check_device, check_host, deploy, measure, predict_flash
from search.deploy.__main__ import main
from search.deploy.calibrate import CORNERS, measure_config, spread
from search.deploy.clips import split_clips
from search.deploy.emit import clips_files
from search.deploy.frontend import front_end
from search.deploy.measure import measure_folder
from search.deploy.spec import load
from search.deploy.synthetic import random_artifact
from search.deploy.toolchain import DEVICE_PACKAGES, device_tools_missing
from search.schema import Config, from_dict
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
            p = cfg.features
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
        ref = verify.mel_filterbank(from_dict({"features": feats}).features)
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


def test_artifact_nested_too_deeply(tmp_path: Path, capsys) -> None:
    """A header, or a metadata value, of JSON nested past Python's recursion limit: one line."""
    import struct

    header = ('{"a":' + "[" * 200_000 + "]" * 200_000 + "}").encode()
    deep = tmp_path / "deep.safetensors"
    deep.write_bytes(struct.pack("<Q", len(header)) + header)
    estimate = altered(small_artifact(tmp_path / "good.safetensors"), tmp_path / "est.safetensors", {"estimate": "[" * 200_000})
    for path in (deep, estimate):
        refused(capsys, path, tmp_path / "out", path.name)
        one_error(*run_verify(capsys, path), path.name)


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
    # --force replaces a library folder only: what the user put there stays, whatever the flags.
    one_error(*run_main(capsys, path, "--out", out, "--clips", "0", "--force"), "keep.txt", "did not write")
    assert (out / "keep.txt").exists() and not (out / "kws_model.c").exists()
    (out / "keep.txt").unlink()
    assert run_main(capsys, path, "--out", out, "--clips", "0")[0] == 0
    (out / "build" / "arm").mkdir(parents=True)  # what make builds there is replaced too
    (out / "build" / "kws_host").write_text("binary")
    (out / "build" / "arm" / "kws.o").write_text("object")
    rc, lines, _ = run_main(capsys, path, "--out", out, "--clips", "0", "--force")
    assert rc == 0 and not (out / "build").exists() and (out / "kws_model.c").is_file()
    assert json.loads(lines[-1])["size_bytes"] == size_bytes(load(path).cfg)
    # A file the user put where deploy's own files go: refused, kept (its own files, even edited, are replaced).
    (out / "mine" / "sub").mkdir(parents=True)  # an empty folder of the user's is kept too
    one_error(*run_main(capsys, path, "--out", out, "--clips", "0", "--force"), "mine", "did not write")
    assert (out / "mine" / "sub").is_dir()
    shutil.rmtree(out / "mine")
    for where in ("build/notes.txt", "cmsis/mine.c", "build/arm/data/0_a_0.wav"):
        target = out / where
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("mine")
        one_error(*run_main(capsys, path, "--out", out, "--clips", "0", "--force"), Path(where).parts[0], "did not write")
        assert target.read_text() == "mine"
        shutil.rmtree(out / Path(where).parts[0])
    (out / "Makefile").write_text("edited")
    assert run_main(capsys, path, "--out", out, "--clips", "0", "--force")[0] == 0
    assert (out / "Makefile").read_text() != "edited"


def test_force_never_deletes_data(tmp_path: Path, capsys) -> None:
    """The data folder given as --out with --force (no clips picked, or a split that does not
    match the artifact) is refused: every wav stays."""
    data = tmp_path / "data"
    tiny_data(data)
    path = small_artifact(tmp_path / "m.safetensors")
    for flags in (("--clips", "0"), ("--clips", "2")):
        one_error(*run_main(capsys, path, "--out", data, "--data-dir", data, "--force", *flags), "--out")
        assert len(list(data.glob("*.wav"))) == 200
    one_error(*run_main(capsys, path, "--out", data, "--force", "--clips", "0"), "did not write")
    assert len(list(data.glob("*.wav"))) == 200


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


# --------------------------------------------------------------------------- lying artifacts


def altered(src: Path, dst: Path, meta: dict[str, str] | None = None, tensors: dict[str, np.ndarray] | None = None) -> Path:
    """A copy of the artifact `src` with some metadata values and tensors replaced."""
    m, t = read(src)
    artifact.write(dst, t | (tensors or {}), m | (meta or {}))
    return dst


def refused(capsys, path: Path, out: Path, *words: str, extra: tuple = ()) -> None:
    """deploy (also with --check) refuses `path` in one line naming `words`, and writes nothing."""
    for flags in ((), ("--check",)):
        one_error(*run_main(capsys, path, "--out", out, "--clips", "0", *flags, *extra), *words)
        assert not out.exists()


C_INJECTION = ' */\n#include "/etc/shadow"\n#error injected\n/* '
FEATURES = json.dumps(from_dict({"features": SMALL}).features.to_dict(), sort_keys=True)


@pytest.mark.parametrize(
    "key, value",
    [
        ("scale", "po2" + C_INJECTION),
        ("pruned", "false" + C_INJECTION),
        ("split_hash", "0123456789ab" + C_INJECTION),
        ("seed", "0" + C_INJECTION),
        ("split", "random" + C_INJECTION),
        ("split", "speaker:a\nb"),
        ("per_channel", "False"),
        ("quant_mode", "qat\n"),
        ("bits", "04"),
        ("gate_order", "ifgo" + C_INJECTION),
        ("test_speaker", "theo\x01"),
        ("classes", json.dumps([str(d) for d in range(9)] + ["9" + C_INJECTION])),
        # A key twice: json.loads keeps the last (valid) value, the first was pasted into the C.
        ("features", FEATURES[:-1] + ', "cmvn": "none' + C_INJECTION.replace("\n", "\\n").replace('"', '\\"') + '", "cmvn": "none"}'),
        ("config", '{"model": {"hidden_size": 4}, "model": {"hidden_size": 4}}'),
        ("features", FEATURES.replace("256", "NaN")),
    ],
)
def test_metadata_reaching_c_is_checked(key: str, value: str, tmp_path: Path, capsys) -> None:
    """Every metadata value that reaches the generated C is in its allowed set or format
    (docs/artifact.md section 2), and JSON metadata holds no key twice: refused in one line."""
    path = altered(small_artifact(tmp_path / "good.safetensors"), tmp_path / "bad.safetensors", {key: value})
    refused(capsys, path, tmp_path / "out", key)


def test_metadata_not_a_number(tmp_path: Path, capsys) -> None:
    good = small_artifact(tmp_path / "good.safetensors")
    cases = {"seed": ("-1", "1.5", "", "٣", "99999999999"), "estimate": ("{not json", "[1]", '{"a": 1, "a": 2}')}
    for key, values in cases.items():
        for value in values:
            refused(capsys, altered(good, tmp_path / "bad.safetensors", {key: value}), tmp_path / "out", key)


@needs_cc
def test_strings_in_c_are_escaped(tmp_path: Path, capsys) -> None:
    """Text that reaches the C from outside (the artifact's file name in comments, clip names in
    string literals) is escaped: it compiles, and the clip names come back byte for byte."""
    name = 'm */\n#error injected\n/* "x"??/.safetensors'
    path = small_artifact(tmp_path / name)
    rc, _, err = run_main(capsys, path, "--out", tmp_path / "lib", "--clips", "0")
    assert rc == 0, err
    lib = tmp_path / "lib"
    names = ["0_a\x01b_0.wav", '1_"q"\\??/\n\x7f_1.wav', "2_é9_2.wav", "3_x*/y_3.wav"]
    header, body = clips_files([(n, np.zeros(4, np.int16)) for n in names])
    (lib / "kws_clips.h").write_text(header)
    (lib / "kws_clips.c").write_text(body)
    (lib / "names.c").write_text(
        '#include <stdio.h>\n#include <string.h>\n#include "kws_clips.h"\n'
        "int main(void) {\n"
        "  for (int i = 0; i < KWS_N_CLIPS; i++) fwrite(kws_clips[i].name, 1, strlen(kws_clips[i].name) + 1, stdout);\n"
        "  return 0;\n}\n"
    )
    cmd = "cc -std=c99 -Wall -Werror -I. -fsyntax-only kws_model.c && cc -std=c99 -Wall -Werror -I. names.c kws_clips.c -o names && ./names"
    r = subprocess.run(cmd, shell=True, cwd=lib, capture_output=True, check=False)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"".join(n.encode() + b"\0" for n in names)
    source = (lib / "kws_model.c").read_text() + (lib / "kws_model.h").read_text()
    assert "#error" not in source.replace("/* kws_model", "").split("*/", 1)[0] or "#error injected" not in source.splitlines()


def pruned_artifact(path: Path, hidden: int, schedule: list, **features) -> Path:
    cfg = from_dict({"model": {"hidden_size": hidden}, "features": SMALL | features, "quant": QAT4, "prune": {"schedule": schedule}})
    return random_artifact(cfg, path)


def test_positions_that_lie(tmp_path: Path, capsys) -> None:
    """Indices must be strictly increasing and < n, masks must set exactly nnz bits and no padding
    bit: checked before anything is written (they became a stack-buffer overflow in kws.c's matvec)."""
    index = pruned_artifact(tmp_path / "index.safetensors", 4, [[0, 0.93]], n_mfcc=13)  # weight_ih: 208 weights, 15 kept
    mask = pruned_artifact(tmp_path / "mask.safetensors", 3, [[0, 0.5]])  # weight_hh: 36 weights in 5 bytes, 18 kept
    idx = read(index)[1]["lstm.weight_ih.index"]
    bits = read(mask)[1]["lstm.weight_hh.mask"]
    cases = {
        "past-the-end": (index, "lstm.weight_ih.index", np.concatenate([idx[:-1], [255]]).astype(np.uint8), ("255", "0..207")),
        "repeated": (index, "lstm.weight_ih.index", np.concatenate([idx[:1], idx[:-1]]).astype(np.uint8), ("increasing",)),
        "descending": (index, "lstm.weight_ih.index", idx[::-1].copy(), ("increasing",)),
        "one-bit-more": (mask, "lstm.weight_hh.mask", np.concatenate([bits[:-1] | 0, [bits[-1] | 0x01]]).astype(np.uint8), ()),
        "padding": (mask, "lstm.weight_hh.mask", np.concatenate([bits[:-1], [bits[-1] | 0x80]]).astype(np.uint8), ("padding",)),
        "one-bit-less": (mask, "lstm.weight_hh.mask", np.concatenate([[bits[0] & (bits[0] - 1)], bits[1:]]).astype(np.uint8), ("18",)),
    }
    for case, (src, name, value, words) in cases.items():
        if case == "one-bit-more":
            flat = np.unpackbits(bits, bitorder="little")
            flat[np.flatnonzero(flat[:36] == 0)[0]] = 1
            value = np.packbits(flat, bitorder="little")
        path = altered(src, tmp_path / f"{case}.safetensors", tensors={name: value})
        refused(capsys, path, tmp_path / "out", name, *words)
        rc, out, err = run_verify(capsys, path)
        one_error(rc, out, err, name, *words)


def run_verify(capsys, path: Path) -> tuple[int, list[str], list[str]]:
    rc = verify.main([str(path), "--data-dir", str(path.parent)])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err.splitlines()


def test_values_that_lie(tmp_path: Path, capsys) -> None:
    """norm.std <= 0 or below its 1e-5 clamp, non-finite values, po2 exponents whose weights
    overflow float32, float scales that are not positive and finite: one line, nothing written."""
    po2 = small_artifact(tmp_path / "po2.safetensors")
    fl = random_artifact(
        from_dict({"model": {"hidden_size": 4}, "features": SMALL, "quant": qat(3, "float", True)}), tmp_path / "f.safetensors"
    )
    fp = random_artifact(
        from_dict({"model": {"hidden_size": 4}, "features": SMALL, "prune": {"schedule": [[0, 0.5]]}}), tmp_path / "fp.safetensors"
    )
    ones, nan, inf = np.ones(10, np.float32), np.float32("nan"), np.float32("inf")
    values = read(fp)[1]["fc.weight.values"]
    cases = [
        (po2, "norm.std", ones * 0, ("norm.std", "1e-05")),
        (po2, "norm.std", -ones, ("norm.std",)),
        (po2, "norm.std", np.where(np.arange(10) == 3, nan, ones).astype(np.float32), ("norm.std", "non-finite")),
        (po2, "norm.std", ones * 1e-7, ("norm.std",)),
        (po2, "lstm.weight_ih.exp", np.array([127], np.int8), ("lstm.weight_ih.exp", "127")),
        (po2, "fc.weight.exp", np.array([-127], np.int8), ("fc.weight.exp", "-127")),
        (po2, "lstm.bias", np.full(16, inf, np.float32), ("lstm.bias", "non-finite")),
        (fl, "fc.weight.scale", np.zeros(10, np.float32), ("fc.weight.scale",)),
        (fl, "fc.weight.scale", -np.ones(10, np.float32), ("fc.weight.scale",)),
        (fl, "fc.weight.scale", np.full(10, 3e38, np.float32), ("fc.weight.scale",)),
        (fl, "lstm.weight_hh.scale", np.full(16, nan, np.float32), ("lstm.weight_hh.scale", "non-finite")),
        (fp, "fc.weight.values", np.where(np.arange(values.size) == 0, nan, values).astype(np.float32), ("fc.weight.values",)),
    ]
    for k, (src, name, value, words) in enumerate(cases):
        path = altered(src, tmp_path / f"bad{k}.safetensors", tensors={name: value})
        refused(capsys, path, tmp_path / "out", *words)
        one_error(*run_verify(capsys, path), *words)


def test_bad_predictions_with_check(tmp_path: Path, capsys) -> None:
    """--check reads the torch predictions beside the artifact as search.verify does: a truncated
    file, a list or a class that is not an integer 0-9 is one line, before anything is written."""
    path = small_artifact(tmp_path / "m.safetensors")
    for text in ('{"0_a_0.wav": 1', "[1, 2]", '{"0_a_0.wav": 1.5}', '{"0_a_0.wav": "1"}', '{"0_a_0.wav": 10}', '{"0_a_0.wav": true}'):
        (tmp_path / "predictions.json").write_text(text)
        one_error(*run_main(capsys, path, "--out", tmp_path / "out", "--clips", "0", "--check"), "predictions.json")
        assert not (tmp_path / "out").exists()
    (tmp_path / "m.predictions.json").write_text("")  # NAME.predictions.json comes first
    one_error(*run_main(capsys, path, "--out", tmp_path / "out", "--check"), "m.predictions.json")


def test_out_holding_the_input(tmp_path: Path, capsys) -> None:
    """--out that is, or contains, the artifact's folder (or the data), even with --force: refused
    before anything is touched; the artifact and its predictions stay."""
    run = tmp_path / "runs" / "run1"
    run.mkdir(parents=True)
    path = small_artifact(run / "model.safetensors")
    (run / "predictions.json").write_text("{}")
    before = {p: p.read_bytes() for p in run.iterdir()}
    (tmp_path / "link").symlink_to(run)
    for out in (run, tmp_path / "runs", tmp_path, tmp_path / "link", run / "model.safetensors", Path(os.path.relpath(run))):
        for flags in ((), ("--force",)):
            one_error(*run_main(capsys, path, "--out", out, "--clips", "0", *flags), "--out", "the artifact")
            assert {p: p.read_bytes() for p in run.iterdir()} == before
    # The artifact reached through a link inside --out: deleting the link is deleting the user's file.
    holder = tmp_path / "holder"
    holder.mkdir()
    (holder / "m.safetensors").symlink_to(path)
    one_error(*run_main(capsys, holder / "m.safetensors", "--out", holder, "--clips", "0", "--force"), "the artifact")
    assert (holder / "m.safetensors").is_symlink()
    # The data folder the device clips come from.
    data = tmp_path / "lib" / "data"
    hash_ = tiny_data(data)
    art = random_artifact(
        from_dict({"model": {"hidden_size": 4}, "features": SMALL, "quant": QAT4}), tmp_path / "d.safetensors", split_hash=hash_
    )
    one_error(*run_main(capsys, art, "--out", tmp_path / "lib", "--data-dir", data, "--clips", "2", "--force"), "the data folder")
    assert len(list(data.glob("*.wav"))) == 200
    rc, lines, err = run_main(capsys, art, "--out", tmp_path / "lib2", "--data-dir", data, "--clips", "2")
    assert rc == 0 and json.loads(lines[-1])["device_clips"] == 2, err


def tiny_data(folder: Path) -> str:
    """200 wavs of 0.1 s noise (10 digits x 2 speakers x 10 takes); the hash of their random split, seed 0."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for d in range(10):
        for speaker in ("ann", "bob"):
            for take in range(10):
                with wave.open(str(folder / f"{d}_{speaker}_{take}.wav"), "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(8000)
                    w.writeframes(rng.integers(-3000, 3000, 800).astype("<i2").tobytes())
    return make_split([f.name for f in list_wavs(folder)], "random", 0).hash
