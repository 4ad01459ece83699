"""`--executor ray` on a real local Ray instance (one per test session: 2 CPUs, one logical GPU, a small object
store): the same journal lines as the local executor, nothing lost or done twice when a worker or the driver is
SIGKILLed or when a local worker shares the run directory, and no contact with anything but this machine."""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from runners.ray_executor import NETWORK_HYGIENE

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install -c constraints/cpu.txt '.[ray]')"
)

REPO = Path(__file__).resolve().parents[2]
SEAL = [sys.executable, "-m", "runners.cli"]
SELFTEST = [*SEAL, "selftest", "--profile", "cpu", "--no-progress"]
ARC = [*SEAL, "ttt", "run", "demo_ttt", "--set", "model.spec=tiny", "--set", "arc.task_ids=[66e6c45b, c7d4e6ad]",
       "--set", "ttt_data.nmax=6", "--set", "infer.max_new_tokens=8", "--profile", "cpu", "--no-progress"]  # fmt: skip
STRACE = None if os.environ.get("SEAL_TEST_NO_STRACE") else shutil.which("strace")  # set: try the /proc check
# What differs between two runs of the same unit: when, where, how long, how much memory the process held.
VOLATILE = {"seconds", "t", "worker", "timings", "peak_memory_bytes", "peak_memory_kind"}


class Cluster:
    def __init__(self, root: Path, address: str, env: dict[str, str]) -> None:
        self.root, self.address, self.env = root, address, env
        self.traces: list[Path] = []

    def command(self, argv: list[str], name: str) -> list[str]:
        """`argv` traced for `connect` calls when strace is here (the network test reads every trace)."""
        if not STRACE:
            return argv
        trace = self.root / f"trace-{name}-{len(self.traces)}.log"
        self.traces.append(trace)
        return [
            STRACE,
            "-f",
            "--seccomp-bpf",
            "-qq",
            "-s",
            "120",
            "-e",
            "trace=connect,execve",
            "-o",
            str(trace),
            *argv,
        ]

    def run(self, argv: list[str], run_dir: Path, *extra: str, ray: bool = True) -> subprocess.CompletedProcess[str]:
        full = [*argv, "--run-dir", str(run_dir), *extra, *(("--ray-address", self.address) if ray else ())]
        return subprocess.run(
            self.command(full, "driver"), cwd=REPO, env=self.env, capture_output=True, text=True, timeout=240
        )

    def popen(self, argv: list[str], run_dir: Path, *extra: str, ray: bool = True) -> subprocess.Popen[str]:
        full = [*argv, "--run-dir", str(run_dir), *extra, *(("--ray-address", self.address) if ray else ())]
        # No strace here: these drivers get SIGKILLed, and the kill must reach the driver itself.
        return subprocess.Popen(full, cwd=REPO, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    # Short paths: Ray's unix sockets live under the temp dir and socket paths are limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="sray-", dir="/tmp"))
    home = root / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")  # with HOME here: no cloud-metadata probe
    env = {
        **os.environ,
        **NETWORK_HYGIENE,
        "HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    port = _free_port()
    ray_bin = str(Path(sys.executable).with_name("ray"))  # the workers' command lines name the temp dir too
    head = Cluster(root, f"127.0.0.1:{port}", env)
    start = [ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
             "--num-gpus=1", "--object-store-memory=100000000", f"--temp-dir={root / 'r'}",
             "--include-dashboard=false", "--disable-usage-stats"]  # fmt: skip
    # `--block`: the head stays this child's, and strace stays attached to every daemon and worker it starts.
    log_path = root / "head.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            head.command([*start, "--block"], "head"), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
        yield head
    finally:
        _stop(root)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not os.environ.get("SEAL_KEEP_RAY_TRACES"):
            shutil.rmtree(root, ignore_errors=True)


def _session_pids(root: Path, extra: set[int] = frozenset()) -> set[int]:
    environs = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                environs[int(entry.name)] = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
    mine = {pid for pid, env in environs.items() if f"HOME={root / 'home'}".encode() in env} | set(extra)
    # The agents rename themselves over their environment; what is left names their raylet.
    mine |= {pid for pid, env in environs.items() if any(f"RAY_RAYLET_PID={p}".encode() in env for p in mine)}
    return mine


def _stop(root: Path) -> None:
    """Ends this session's Ray processes only (not `ray stop`, which ends every Ray instance of this user): each
    inherited HOME=<root>/home."""
    mine = _session_pids(root)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(1.0)


def _peer(hex_addr: str) -> str:
    """/proc/net/{tcp,udp}[6] `ADDR:PORT` (hex, host byte order per 32-bit word) -> the remote IP as text."""
    addr = bytes.fromhex(hex_addr.split(":")[0])
    words = b"".join(addr[i : i + 4][::-1] for i in range(0, len(addr), 4))
    return socket.inet_ntop(socket.AF_INET if len(words) == 4 else socket.AF_INET6, words)


def _check_live_sockets(cluster: Cluster, tmp_path: Path) -> None:
    units = ["--set", "selftest.units=12", "--set", "selftest.iterations=200000"]
    proc = cluster.popen(SELFTEST, tmp_path / "run", *units)
    peers: collections.Counter[str] = collections.Counter()
    while proc.poll() is None:
        inodes = set()
        for pid in _session_pids(cluster.root, {proc.pid}):
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
            except OSError:
                continue
        for table in ("tcp", "tcp6", "udp", "udp6"):
            for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = row.split()
                if fields[9] in inodes:
                    peers[_peer(fields[2])] += 1
        time.sleep(0.1)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    local = {"127.0.0.1", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1"}
    assert peers and set(peers) <= local, peers


def _lines(run_dir: Path, stage: str) -> list[dict]:
    out = []
    for path in sorted((run_dir / "stages" / stage).glob("journal*.jsonl")):
        for raw in path.read_text().splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
    return out


def _stable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _results(run_dir: Path, stage: str) -> dict[str, object]:
    """unit -> its last line; a unit that finished (not `error`, which the next run retries) is there once."""
    lines = _lines(run_dir, stage)
    counts = collections.Counter(line["unit"] for line in lines if line["status"] != "error")
    assert max(counts.values()) == 1, f"units recorded twice: {[u for u, c in counts.items() if c > 1]}"
    return {line["unit"]: _stable(line) for line in lines}


def _wait_for_lines(run_dir: Path, stage: str, proc: subprocess.Popen[str], at_least: int) -> list[dict]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = _lines(run_dir, stage) if run_dir.exists() else []
        if len(lines) >= at_least:
            return lines
        assert proc.poll() is None, f"the driver stopped early: {proc.stderr.read() if proc.stderr else ''}"
        time.sleep(0.02)
    raise AssertionError("no journal lines in time")


UNITS = ["--set", "selftest.units=10", "--set", "selftest.iterations=300000", "--set", "selftest.fail_units=[u00003]"]


@pytest.fixture(scope="session")
def reference(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    run_dir = tmp_path_factory.mktemp("local") / "run"
    done = cluster.run(SELFTEST, run_dir, *UNITS, ray=False)
    assert done.returncode == 1 and "1 unit(s) failed" in done.stderr, done.stderr
    return _results(run_dir, "hash")


def test_selftest_under_ray_equals_local_and_an_exception_is_one_error_line(cluster, reference, tmp_path) -> None:
    # Half of the one logical GPU per unit: two slots (the two CPUs would allow two as well).
    done = cluster.run(SELFTEST, tmp_path / "run", *UNITS, "--set", "run.ray_gpus_per_unit=0.5")
    assert done.returncode == 1 and "1 unit(s) failed" in done.stderr, done.stderr
    results = _results(tmp_path / "run", "hash")
    assert results == reference
    failed = results["u00003"]
    assert failed["status"] == "error" and failed["reason"] == "RuntimeError: selftest.fail_units names u00003"
    workers = {line["worker"] for line in _lines(tmp_path / "run", "hash")}
    assert all(":ray-" in w for w in workers) and len(workers) == 2, workers  # two actors, one per logical CPU


def test_arc_ttt_under_ray_equals_local(cluster, tmp_path) -> None:
    local = cluster.run(ARC, tmp_path / "local", ray=False)
    assert local.returncode == 0, local.stderr
    remote = cluster.run(ARC, tmp_path / "ray")
    assert remote.returncode == 0, remote.stderr
    assert _results(tmp_path / "ray", "ttt") == _results(tmp_path / "local", "ttt")


SEAL = [*SEAL, "arc", "rl", "demo_arc", "--profile", "cpu", "--no-progress", "--set", "model.spec=tiny",
        "--set", "ttt_data.nmax=4", "--set", "infer.max_new_tokens=8", "--set", "seal.max_new_tokens=24",
        "--set", "seal.invalid=train_zero_epochs", "--set", "seal.select=threshold", "--set", "seal.threshold=0.0",
        "--set", "restem.epochs=2", "--set", "seal.evaluate_final=false"]  # fmt: skip


def test_the_seal_loop_under_ray_equals_local_through_its_barriers_and_single_unit_stages(cluster, tmp_path):
    """sample → base → inner (per task, self-edit) → barrier → select → SFT → merge (single units, one actor)."""
    local = cluster.run(SEAL, tmp_path / "local", ray=False)
    assert local.returncode == 0, local.stderr
    remote = cluster.run(SEAL, tmp_path / "ray")
    assert remote.returncode == 0, remote.stderr
    stages = sorted(p.name for p in (tmp_path / "local" / "stages").iterdir())
    assert stages == ["it0.base", "it0.inner", "it0.merge", "it0.sample", "it0.select", "it0.sft"]
    for stage in stages:
        assert _results(tmp_path / "ray", stage) == _results(tmp_path / "local", stage), stage
    merged = _lines(tmp_path / "ray", "it0.merge")[0]
    assert merged["artifacts"] == {"model": "artifacts/it0.merge/merge/model"} and ":ray-" in merged["worker"]
    assert (tmp_path / "ray" / "artifacts" / "it0.merge" / "merge" / "model").is_dir()


def test_a_worker_sigkilled_mid_unit_is_retried_and_its_line_is_the_uninterrupted_one(cluster, reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = cluster.popen(SELFTEST, run_dir, *UNITS)
    first = _wait_for_lines(run_dir, "hash", proc, 1)
    victim = int(first[0]["worker"].split(":")[1])  # the actor's process, busy with its next unit
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=180) == 1, proc.stderr.read() if proc.stderr else ""
    results = _results(run_dir, "hash")
    assert results == reference
    workers = {line["worker"] for line in _lines(run_dir, "hash")}
    assert len(workers) == 3, f"expected the two actors and the one Ray restarted after the kill: {workers}"


def test_a_sigkilled_driver_restarted_skips_what_is_journaled(cluster, reference, tmp_path) -> None:
    run_dir = tmp_path / "run"
    proc = cluster.popen(SELFTEST, run_dir, *UNITS, "--set", "run.ray_gpus_per_unit=1")
    _wait_for_lines(run_dir, "hash", proc, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len({line["worker"] for line in _lines(run_dir, "hash")}) == 1  # one GPU per unit, one logical GPU
    finished = {line["unit"] for line in _lines(run_dir, "hash") if line["status"] != "error"}
    assert 0 < len(finished) < 10, finished
    again = cluster.run(SELFTEST, run_dir, *UNITS)
    assert again.returncode == 1, again.stderr
    processed = int(re.search(r"processed (\d+)", again.stderr).group(1))
    assert processed == 10 - len(finished), again.stderr  # the rest, and the `error` unit again (errors are retried)
    assert _results(run_dir, "hash") == reference
    assert not list((run_dir / "claims" / "hash").glob("*.lock")), "claims left behind"


def test_a_local_worker_and_a_ray_driver_share_one_run_directory(cluster, tmp_path) -> None:
    run_dir = tmp_path / "run"
    units = ["--set", "selftest.units=24", "--set", "selftest.iterations=200000"]
    prepared = cluster.run(SELFTEST, run_dir, *units, "--limit", "0", ray=False)
    assert prepared.returncode == 0, prepared.stderr  # the manifest exists before both start
    ray_driver = cluster.popen(SELFTEST, run_dir, *units)
    local = cluster.popen(SELFTEST, run_dir, *units, ray=False)
    assert ray_driver.wait(timeout=180) == 0, ray_driver.stderr.read() if ray_driver.stderr else ""
    assert local.wait(timeout=180) == 0, local.stderr.read() if local.stderr else ""
    lines = _lines(run_dir, "hash")
    counts = collections.Counter(line["unit"] for line in lines)
    assert len(counts) == 24 and max(counts.values()) == 1, counts
    kinds = collections.Counter(":ray-" in line["worker"] for line in lines)
    assert kinds[True] and kinds[False], f"one side did everything: {kinds}"


def test_ray_contacts_only_loopback_and_unix_sockets(cluster, tmp_path) -> None:
    """Reads the connect() calls of the head's daemons and workers (traced since the session started) and of every
    driver above. Without strace: the peers of every socket the session's Ray processes and a driver hold, sampled
    while the driver runs (this sees lasting connections, not a DNS query that comes and goes)."""
    if STRACE is None:
        _check_live_sockets(cluster, tmp_path)
        return
    assert cluster.traces and all(t.exists() for t in cluster.traces)
    seen: collections.Counter[str] = collections.Counter()
    outside = []
    for trace in cluster.traces:
        programs: dict[str, str] = {}  # pid -> the program it runs, to name who reached outside
        for line in trace.read_text(errors="replace").splitlines():
            pid = line.split(" ", 1)[0]
            if " execve(" in line:
                programs[pid] = line.split("[", 1)[-1][:200]
            if "connect(" not in line:
                continue
            family = re.search(r"sa_family=(AF_\w+)", line)
            kind = family.group(1) if family else "?"
            seen[kind] += 1
            if kind == "AF_UNIX":
                continue
            if kind == "AF_INET" and 'inet_addr("127.0.0.1")' in line:
                continue
            if kind == "AF_INET6" and re.search(r'inet_pton\(AF_INET6, "(::1|::ffff:127\.0\.0\.1)"', line):
                continue
            if kind in ("AF_INET", "AF_INET6") and ("0.0.0.0" in line or '"::"' in line):
                continue  # connect to the any-address is local
            outside.append(f"{trace.name}: {line}  ← {programs.get(pid, '?')}")
    assert seen["AF_INET"] > 0, f"the traces saw no TCP at all: {seen}"
    assert not outside, "\n".join(outside[:10])
