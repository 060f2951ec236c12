"""Shared fixtures for the data-pipeline tests.

`fsdd_dir` is the real FSDD recordings folder (env FSDD_DIR); tests that need real audio
skip when it is unset. `small_data` is a fresh temporary folder of symlinks to a stratified
subset of it (takes 0-3 of every digit and speaker: 240 clips), which a test may modify;
`small_data_shared` is the same subset built once per session, which tests must not modify.
Nothing here changes global state.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsdd import features

SMALL_TAKES = range(4)  # takes 0..3 of every digit and speaker: 10 * 6 * 4 = 240 clips


@pytest.fixture(scope="session")
def torch_threads():
    """fsdd.features.torch_threads(n), for tests and fixtures that compute features (one thread keeps them fast)."""
    return features.torch_threads


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


@pytest.fixture(scope="session")
def tensorboard_hparams():
    """`read(logdir)`: (parameter columns, metric columns, {session: its parameters}) as TensorBoard's
    HParams tab computes them, with its own backend over its own event multiplexer."""
    return _tensorboard_hparams


def _tensorboard_hparams(logdir: Path) -> tuple[list[str], list[str], dict[str, dict]]:
    """(parameter columns, metric columns, {session: its parameters}) as TensorBoard's HParams tab
    computes them (its own backend, over its own event multiplexer)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    ctx = backend_context.Context(
        base_plugin.TBContext(data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)), multiplexer=mux, logdir=str(logdir))
    )
    rc = context.RequestContext()
    exp = ctx.experiment_from_metadata(rc, "", True, ctx.hparams_metadata(rc, ""), ctx.hparams_from_data_provider(rc, "", None))
    cols = [api_pb2.ColParams(hparam=h.name) for h in exp.hparam_infos] + [api_pb2.ColParams(metric=m.name) for m in exp.metric_infos]
    request = api_pb2.ListSessionGroupsRequest(
        allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS], start_index=0, slice_size=1000, col_params=cols
    )
    groups = list_session_groups.Handler(rc, ctx, "", request).run().session_groups
    sessions = {g.name: {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in g.hparams.items()} for g in groups}
    return [h.name for h in exp.hparam_infos], [m.name.tag for m in exp.metric_infos], sessions
