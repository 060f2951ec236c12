"""The search on a real two-host Ray cluster (`python -m search.run --address HOST:PORT`).

Two network namespaces made by the test stand for two hosts: a veth pair joins them
(10.77.0.1/24 and 10.77.0.2/24), the Ray head runs in the first, a worker node in the
second, each with one CPU, all with token authentication (RAY_AUTH_MODE=token and a fresh
token in RAY_AUTH_TOKEN, so the test neither reads nor writes ~/.ray/auth_token). The
driver runs in the first namespace, on a 240-clip subset of FSDD, with a tiny space.
The test checks that the run finishes, exports a non-empty Pareto front, and that Ray
placed trials on both hosts (each trial's result.json carries the `node_ip` it ran on).

Needs root and `ip netns` (skipped otherwise) and FSDD_DIR. About a minute on 2 cores.

Teardown never runs `ray stop`: Ray finds its processes by name across the whole machine
(network namespaces do not separate PIDs), so it would also stop every other Ray on the
host. The test kills exactly the processes inside its own namespaces (`ip netns pids`),
then deletes the namespaces (which removes the veth pair) and the nodes' temp dirs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))
HEAD_IP, WORKER_IP, PORT = "10.77.0.1", "10.77.0.2", 6390
ADDRESS = f"{HEAD_IP}:{PORT}"
TRIALS = 6  # two run at once (one per node, each takes its node's only CPU); more gives margin
SEARCH_TIMEOUT_S = 240

# Epochs enough for a trial to take seconds (about 5 s here): with trials of a third of a second,
# the head's actor, reused, ran all six before the worker's actor had started (a CI run, busy cores).
TINY_CONFIG = """\
base: {train: {epochs: 200, batch_size: 32}}
space: {hidden_sizes: [4, 8, 16], qat_epochs: 2}
"""


def _sh(*cmd: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout, env=env)


def _netns_unavailable() -> str | None:
    """Why this machine cannot run the test, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (creates network namespaces and a veth pair)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` command (ip netns)"
    if not Path(RAY).is_file():
        return f"no `ray` command next to {PYTHON}"
    probe = f"kwsprobe{os.getpid()}"
    try:
        r = _sh("ip", "netns", "add", probe, check=False, timeout=10)
        if r.returncode != 0:
            return f"`ip netns add` is not permitted here: {r.stderr.strip()}"
    finally:
        _sh("ip", "netns", "del", probe, check=False, timeout=10)
    return None


@dataclass
class Cluster:
    head_ns: str
    worker_ns: str
    env: dict[str, str]  # of every Ray process and of the driver: token auth on
    temp_dirs: list[Path] = field(default_factory=list)

    def exec(self, ns: str, *cmd: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return _sh("ip", "netns", "exec", ns, *cmd, check=False, timeout=timeout, env=env or self.env)

    def alive_nodes(self) -> int:
        r = self.exec(self.head_ns, RAY, "status", "--address", ADDRESS, timeout=30)
        if r.returncode != 0:
            return 0
        active = r.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if "node_" in line)


def _namespace_pids(ns: str) -> list[int]:
    r = _sh("ip", "netns", "pids", ns, check=False, timeout=10)
    return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []


def _kill_namespace_processes(namespaces: tuple[str, ...], wait_s: float = 15.0) -> dict[str, list[int]]:
    """SIGKILL every process in the given network namespaces (what `ray stop --force` does, but
    only to this test's processes); the PIDs still there after `wait_s`, by namespace."""
    deadline = time.time() + wait_s
    while True:
        left = {ns: _namespace_pids(ns) for ns in namespaces}
        if not any(left.values()) or time.time() > deadline:
            return {ns: pids for ns, pids in left.items() if pids}
        for pid in (p for pids in left.values() for p in pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def _env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        # Workers on both "hosts" import this checkout's `search` (not only an installed copy).
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        RAY_USAGE_STATS_ENABLED="0",
    )
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (dropped with the other RAY_* above) would refuse the second node.
    return env


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}"
    head_ns, worker_ns = f"kws{tag}h", f"kws{tag}w"
    veth_head, veth_worker = f"vk{tag}h", f"vk{tag}w"  # interface names: at most 15 characters
    c = Cluster(head_ns, worker_ns, _env(secrets.token_hex(32)))
    try:
        _sh("ip", "netns", "add", head_ns)
        _sh("ip", "netns", "add", worker_ns)
        _sh("ip", "link", "add", veth_head, "type", "veth", "peer", "name", veth_worker)
        for ns, dev, ip in ((head_ns, veth_head, HEAD_IP), (worker_ns, veth_worker, WORKER_IP)):
            _sh("ip", "link", "set", dev, "netns", ns)
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        # Short temp dirs of their own: Ray's Unix sockets live there (path limit ~107 chars),
        # and the shared /tmp/ray may belong to other Ray instances on this machine.
        c.temp_dirs = [Path(tempfile.mkdtemp(prefix=f"rc{tag}", dir="/tmp")) for _ in range(2)]
        common = ["--num-cpus=1", "--disable-usage-stats"]
        r = c.exec(
            head_ns,
            RAY, "start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={PORT}", "--include-dashboard=false",
            f"--temp-dir={c.temp_dirs[0]}", *common,
            timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, f"ray start --head failed:\n{r.stdout}\n{r.stderr}"
        r = c.exec(
            worker_ns,
            RAY, "start", f"--address={ADDRESS}", f"--node-ip-address={WORKER_IP}", f"--temp-dir={c.temp_dirs[1]}", *common,
            timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, f"ray start (worker node) failed:\n{r.stdout}\n{r.stderr}"
        deadline = time.time() + 60
        while c.alive_nodes() < 2:
            assert time.time() < deadline, "the worker node did not join the head within 60 s"
            time.sleep(1)
        yield c
    finally:
        stuck = _kill_namespace_processes((head_ns, worker_ns))
        for ns in (head_ns, worker_ns):
            _sh("ip", "netns", "del", ns, check=False)  # takes its end of the veth pair, and so the pair, with it
        for dev in (veth_head, veth_worker):  # in case setup failed before moving them
            _sh("ip", "link", "del", dev, check=False)
        for d in c.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
        names = _sh("ip", "netns", "list", check=False).stdout.split()
        if sys.exc_info()[0] is None:  # do not hide a setup failure behind a teardown one
            assert not stuck, f"processes survived SIGKILL in the test's namespaces: {stuck}"
            assert head_ns not in names and worker_ns not in names, f"namespaces not deleted: {names}"


def _small_data(src: Path, dst: Path) -> Path:
    """Takes 0-3 of every digit and speaker (240 clips), as symlinks."""
    dst.mkdir(parents=True)
    for f in sorted(src.glob("*.wav")):
        if int(f.stem.rsplit("_", 1)[1]) < 4:
            (dst / f.name).symlink_to(f.resolve())
    return dst


def test_search_runs_on_two_hosts(fsdd_dir: Path, cluster: Cluster, tmp_path: Path) -> None:
    # Token authentication is really on: a client with another token is refused.
    wrong = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    r = cluster.exec(cluster.worker_ns, RAY, "status", "--address", ADDRESS, env=wrong, timeout=60)
    assert r.returncode != 0 and "AuthenticationError" in r.stdout + r.stderr, r.stdout + r.stderr

    data = _small_data(fsdd_dir, tmp_path / "recordings")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out, cache = tmp_path / "runs", tmp_path / "cache"
    cmd = [
        PYTHON, "-m", "search.run", "--address", ADDRESS, "--budget-kb", "8", "--trials", str(TRIALS),
        "--config", str(config), "--out", str(out), "--name", "c1", "--cache-dir", str(cache),
    ]  # fmt: skip
    env = {**cluster.env, "FSDD_DIR": str(data)}
    start = time.time()
    try:
        r = subprocess.run(
            ["ip", "netns", "exec", cluster.head_ns, *cmd],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=SEARCH_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        text = [x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (e.stdout, e.stderr)]
        pytest.fail(f"the search did not finish within {SEARCH_TIMEOUT_S} s:\n{text[0]}\n{text[1][-6000:]}")
    log = f"--- stdout\n{r.stdout}\n--- stderr\n{r.stderr[-6000:]}"
    print(f"search on the cluster took {time.time() - start:.0f} s\n{r.stdout}")
    assert r.returncode == 0, log

    run_dir = out / "c1"
    summary = json.loads((run_dir / "pareto.json").read_text())
    assert summary["front"], f"empty Pareto front\n{log}"
    for row in summary["front"]:
        assert (run_dir / row["artifact"]).is_file()
        assert row["size_bytes"] <= 8 * 1024

    results = list(run_dir.glob("*/result.json"))
    assert len(results) == TRIALS, f"{len(results)} trial result files for {TRIALS} trials\n{log}"
    node_ips = {
        json.loads(line)["node_ip"]
        for f in results
        for line in f.read_text().splitlines()
        if line.strip()
    }  # fmt: skip
    assert node_ips == {HEAD_IP, WORKER_IP}, f"trials ran on {sorted(node_ips)}, expected both hosts\n{log}"
