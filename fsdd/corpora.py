"""Several corpora as one list of clips: each clip's key (its speaker named by corpus and name where
there are several), its file, and whether it only trains (synthetic voices)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from fsdd.audio import list_wavs
from fsdd.download import load_manifest
from fsdd.errors import EMPTY_PATH, DataError
from fsdd.files import resolved
from fsdd.schema import SAMPLE_RATE, Corpus


@dataclass(frozen=True)
class ClipList:
    """Every clip of some corpora, in corpus order and, within a corpus, by file name.

    A key is the clip's file name when there is one real (not training-only) corpus, as in every
    run before corpora existed (so their splits, hashes and artifacts are unchanged), else
    `corpus/file`; a training-only corpus's keys are always `corpus/file`."""

    corpora: tuple[Corpus, ...]
    keys: tuple[str, ...]
    files: tuple[Path, ...]
    train_only: tuple[bool, ...]
    spans: tuple[range, ...]  # each corpus's positions

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def real(self) -> list[int]:
        """Positions of the clips of real (not training-only) corpora."""
        return [i for i, only in enumerate(self.train_only) if not only]


def _rate(path: Path) -> int | None:
    try:
        return sf.info(str(path)).samplerate
    except (sf.SoundFileError, RuntimeError, OSError):
        return None  # read_wav names the file and the problem when the clip is read


def list_clips(corpora: Sequence[Corpus]) -> ClipList:
    """The clips of `corpora`. DataError in one line for: no corpus, no
    real (not training-only) corpus, the same folder twice, a name twice, a folder without usable
    clips (fsdd.audio.list_wavs names the first bad one), or a corpus at another sample rate."""
    if not corpora:
        raise DataError("no corpus given: pass --data-dir (or set $FSDD_DIR)")
    if all(c.train_only for c in corpora):
        raise DataError("every corpus is training-only (synthetic voices): give at least one corpus of real recordings")
    per_corpus = [list_wavs(c.path) for c in corpora]  # each folder's own problem first (missing, empty, a bad clip)
    seen: dict[str, Corpus] = {}
    names: set[str] = set()
    for c in corpora:
        real = os.path.realpath(c.path)
        if real in seen:
            raise DataError(f"the same folder twice: {c.path} (as corpus {c.name!r}) and {seen[real].path} (as {seen[real].name!r})")
        if c.name in names:
            raise DataError(f"two corpora named {c.name!r}: give one of them another name with --data-dir NAME=PATH")
        seen[real] = c
        names.add(c.name)
    rates = {c.name: _rate(files[0]) for c, files in zip(corpora, per_corpus, strict=True)}
    odd = next((n for n, r in rates.items() if r is not None and r != SAMPLE_RATE), None)
    if odd is not None:
        if len(rates) == 1:
            where = f"corpus {odd!r} ({per_corpus[0][0]})"
            raise DataError(f"{where} is at {rates[odd]} Hz; every clip must be {SAMPLE_RATE} Hz: resample it first")
        others = ", ".join(f"{n} at {r} Hz" for n, r in rates.items() if r is not None)
        raise DataError(f"corpora at different sample rates ({others}); every clip must be {SAMPLE_RATE} Hz: resample corpus {odd!r} first")
    qualify = sum(1 for c in corpora if not c.train_only) > 1
    keys, files, only, spans = [], [], [], []
    for c, found in zip(corpora, per_corpus, strict=True):
        spans.append(range(len(keys), len(keys) + len(found)))
        keys += [f"{c.name}/{f.name}" if qualify or c.train_only else f.name for f in found]
        files += found
        only += [c.train_only] * len(found)
    return ClipList(tuple(corpora), tuple(keys), tuple(files), tuple(only), tuple(spans))


def default_name(path: str | Path) -> str:
    """A corpus's name when none is given: `fsdd` for a folder of FSDD's own recordings (every clip
    named in its shipped manifest), else the folder's name with characters a corpus name cannot
    hold replaced by '-'."""
    path = Path(path)
    try:
        fsdd_names = set(load_manifest())
        if all(f.name in fsdd_names for f in list_wavs(path)):
            return "fsdd"
    except DataError:
        pass
    name = "".join("-" if c in "/\\:_ " or not c.isprintable() else c for c in resolved(path, "data dir").name).strip("-.")
    return name or "corpus"


def as_corpora(data: str | Path | Corpus | Sequence[Corpus]) -> tuple[Corpus, ...]:
    """Corpora from what callers hold: one folder (named by default_name), a Corpus, or several."""
    if isinstance(data, Corpus):
        return (data,)
    if isinstance(data, str | Path):
        return (Corpus(default_name(data), str(data)),)
    return tuple(data)


def parse_data_dir(text: str) -> Corpus:
    """A `--data-dir` value: `PATH` or `NAME=PATH` (the corpus's name in reports and speaker names).
    DataError if the name is not one a corpus can have."""
    name, sep, path = text.partition("=")
    if not sep or "/" in name:
        name, path = "", text
    elif not name:
        raise DataError(f"--data-dir {text!r}: an empty corpus name before '='")
    if not path.strip():
        raise DataError(f"--data-dir {text!r}: {EMPTY_PATH}")
    try:
        return Corpus(name or default_name(path), path)
    except ValueError as e:
        raise DataError(f"--data-dir {text!r}: {e}") from None
