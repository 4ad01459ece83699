"""Sync, pull, push, report and export rough edges a held-out review found: the URL remembered although the first
push failed, targets that can never work refused in one line (not "retry"), pushed copies recognised, pull refusing
a foreign folder, `export --out DIR`, and the small wording fixes."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from runners.cli import main
from runners.store import Journal, RunStore, UnitRecord
from runners.sync import recorded_url

ROOT = Path(__file__).resolve().parents[3]
SELFTEST = ["--set", "selftest.units=3", "--set", "selftest.iterations=50", "--no-progress"]


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: connections are refused


def _seal(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update({
        "OMP_NUM_THREADS": "1", "SEAL_CACHE": str(cwd / "cache"), "PYTHONPATH": str(ROOT),
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1",
        "AWS_SHARED_CREDENTIALS_FILE": str(cwd / "none"), "AWS_CONFIG_FILE": str(cwd / "none"),
    })  # fmt: skip
    return subprocess.run([sys.executable, "-m", "runners.cli", *args], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- 1. the URL is remembered when the run starts syncing ------------------------------------------------------


def test_a_run_whose_first_push_fails_remembers_its_url_for_push_and_resume(tmp_path: Path) -> None:
    pytest.importorskip("s3fs")
    down = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}", "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    url = "s3://bucket/x"
    ran = _seal(["selftest", "--run-dir", "r", "--sync-to", url, "--set", "run.sync_wait_s=2", *SELFTEST],
                tmp_path, **down)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "are not in s3://bucket/x yet" in ran.stderr and "`seal push r`" in ran.stderr
    assert recorded_url(tmp_path / "r") == url
    pushed = _seal(["push", "r"], tmp_path, **down)  # the advice the warning gave: it tries, and says retry
    assert "never synced" not in pushed.stderr
    assert f"{url}: push failed (EndpointConnectionError" in _one_line(pushed) and "again" in pushed.stderr
    resumed = _seal(["selftest", "--run-dir", "r", "--set", "run.sync_wait_s=2", *SELFTEST], tmp_path, **down)
    assert resumed.returncode == 0, resumed.stderr
    assert "are not in s3://bucket/x yet" in resumed.stderr  # still syncing there, without --sync-to


def test_the_url_is_recorded_at_start_before_any_push(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "a", sync_to=str(tmp_path / "drive"))
    assert recorded_url(tmp_path / "a") is None  # opening writes nothing
    store.start({"x": 1}, "h")
    assert recorded_url(tmp_path / "a") == str(tmp_path / "drive")
    assert not (tmp_path / "drive").exists()  # recorded locally; nothing was pushed yet


