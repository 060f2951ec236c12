"""Shared fixtures for the data-pipeline tests.

`fsdd_dir` is the real FSDD recordings folder (env FSDD_DIR); tests that need real audio
skip when it is unset. `small_data` is a fresh temporary folder of symlinks to a stratified
subset of it (takes 0-3 of every digit and speaker: 240 clips), which a test may modify;
`small_data_shared` is the same subset built once per session, which tests must not modify.
Nothing here changes global state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

SMALL_TAKES = range(4)  # takes 0..3 of every digit and speaker: 10 * 6 * 4 = 240 clips


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run a block with `n` torch intra-op threads, restoring the previous setting.

    Per-clip MFCCs are tiny ops, which run many times slower with several threads on a busy
    machine (thread hand-off dominates); one thread keeps the feature-computing tests fast.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def torch_threads():
    """The `_torch_threads(n)` context manager, for tests and fixtures that compute features."""
    return _torch_threads


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    env = os.environ.get("FSDD_DIR")
    if not env:
        pytest.skip("FSDD_DIR is not set: point it at the FSDD recordings folder (…/recordings) to run this test")
    path = Path(env)
    if not path.is_dir() or not any(path.glob("*.wav")):
        pytest.fail(f"FSDD_DIR={env} is not a folder of FSDD .wav recordings")
    return path


def _link_subset(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in sorted(src.glob("*.wav")):
        digit, speaker, take = f.stem.split("_")
        if int(take) in SMALL_TAKES:
            (dst / f.name).symlink_to(f.resolve())
    return dst


@pytest.fixture
def small_data(fsdd_dir: Path, tmp_path: Path) -> Path:
    """A fresh folder of symlinks to 240 real clips (takes 0-3 of every digit and speaker); may be modified."""
    return _link_subset(fsdd_dir, tmp_path / "recordings")


@pytest.fixture(scope="session")
def small_data_shared(fsdd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 240-clip subset as `small_data`, built once per session: read-only by convention."""
    return _link_subset(fsdd_dir, tmp_path_factory.mktemp("shared") / "recordings")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    path.mkdir()
    return path
