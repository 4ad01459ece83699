"""`seal grade` refuses bad options, specs, outputs and inputs in one line, before anything is written."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from grading.bundle import write_bundle
from grading.cache import CacheError, JudgementCache
from grading.judges import check_url, is_name_resolution_failure, parse_judge_spec
from runners.cli.grade import grade
from tests.fixtures.ollama_server import FakeOllama
from tests.unit.grading.conftest import MODEL, qa_items

FAST = ["--timeout", "2", "--retries", "1", "--backoff", "0.01", "--variance-sample", "0", "--quiet"]


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(grade, list(args))


def _one_line_usage_error(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    return result.output


@pytest.fixture
def bundle(tmp_path: Path) -> str:
    return str(write_bundle(tmp_path / "b.jsonl", qa_items(3), {"run_id": "r1"}))


def test_an_out_below_a_file_is_refused(bundle: str, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    output = _one_line_usage_error(_invoke(bundle, "--out", str(afile / "sub")))
    assert f"--out {afile / 'sub'} cannot hold folders: {afile} is a file" in output


def _corrupt(path: Path, how: str) -> None:
    if how == "not a database":
        path.write_bytes(b"this is not sqlite " * 100)
        return
    with JudgementCache(path) as cache:
        cache.set_meta("inputs", [{"path": "x", "sha256": "0" * 64}])
        for i in range(400):
            cache.set_meta(f"k{i}", "v" * 200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("how", ["not a database", "truncated"])
def test_a_corrupt_cache_is_named_with_what_to_do(bundle: str, tmp_path: Path, how: str) -> None:
    out = tmp_path / "g"
    out.mkdir()
    _corrupt(out / "cache.sqlite", how)
    for args in (["report", str(out)], [bundle, "--out", str(out), "--add"]):
        output = _one_line_usage_error(_invoke(*args))
        assert f"{out / 'cache.sqlite'}: not a usable grading cache" in output and "delete it" in output
    with pytest.raises(CacheError):
        JudgementCache(out / "cache.sqlite")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("openai-compat:#m", "the base URL: '' is not a server URL"),
        ("openai-compat:notaurl#m", "the base URL: 'notaurl' is not a server URL"),
        ("openai-compat:ftp://h/v1#m", "is not http:// or https://"),
        ("openai-compat:http://h:1:2/v1#m", "Port could not be cast"),
        ("openai-compat:http://h/v1#", "names no model"),
    ],
)
def test_bad_openai_compat_specs_are_spec_errors(bundle: str, tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="http\\(s\\)://host|names no model"):
        parse_judge_spec(spec)
    out = tmp_path / "g"
    output = _one_line_usage_error(_invoke(bundle, "--judge", spec, "--out", str(out)))
    assert message in output and "judge unavailable" not in output
    assert not out.exists()


def test_a_host_that_is_not_a_url_names_the_option(bundle: str, tmp_path: Path) -> None:
    out = tmp_path / "g"
    output = _one_line_usage_error(
        _invoke(bundle, "--judge", f"ollama:{MODEL}", "--host", "http://127.0.0.1:33533:99", "--out", str(out))
    )
    assert "--host: 'http://127.0.0.1:33533:99' is not a server URL (Port could not be cast" in output
    assert not out.exists()
    assert check_url("http://127.0.0.1:8000/v1", "x") == "http://127.0.0.1:8000/v1"


def test_a_name_resolution_failure_is_not_called_refused() -> None:
    try:
        raise httpx.ConnectError("boom") from socket.gaierror(-2, "Name or service not known")
    except httpx.ConnectError as exc:
        assert is_name_resolution_failure(exc)
    assert not is_name_resolution_failure(httpx.ConnectError("[Errno 111] Connection refused"))


def test_an_unresolvable_host_says_so(bundle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "notahost.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    out = tmp_path / "g"
    result = _invoke(bundle, "--judge", f"ollama:{MODEL}", "--host", "notahost.invalid", "--out", str(out), *FAST)
    assert result.exit_code == 1 and "host name not found (DNS)" in result.output, result.output
    assert "connection refused" not in result.output and result.output.startswith("Error: judge unavailable")
    assert not out.exists()


def test_a_judge_that_fails_its_preflight_leaves_no_out(bundle: str, tmp_path: Path) -> None:
    down = _invoke(bundle, "--judge", f"ollama:{MODEL}", "--host", "http://127.0.0.1:9", "--out", str(tmp_path / "a"),
                   *FAST)  # fmt: skip
    assert down.exit_code == 1 and "Error: judge unavailable" in down.output, down.output
    assert not (tmp_path / "a").exists()
    with FakeOllama(models=(MODEL,)) as server:
        missing = _invoke(bundle, "--judge", "ollama:nope:1b", "--host", server.url, "--out", str(tmp_path / "b"),
                          *FAST)  # fmt: skip
    assert missing.exit_code == 1 and "ollama pull nope:1b" in missing.output
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("kind", ["seal", "bundle"])
def test_an_input_with_no_items_is_refused(tmp_path: Path, kind: str) -> None:
    if kind == "seal":
        path = tmp_path / "empty.json"
        path.write_text(json.dumps({"articles": []}))
    else:
        path = write_bundle(tmp_path / "empty.jsonl", [], {"run_id": "r1"})
    out = tmp_path / "g"
    output = _one_line_usage_error(_invoke(str(path), "--judge", f"ollama:{MODEL}", "--out", str(out)))
    assert f"{path}: nothing to grade" in output
    assert not out.exists()


def test_the_in_loop_judge_names_judge_host() -> None:
    from grading.judges import make_judge

    with pytest.raises(ValueError, match="^judge.host: 'http://h:1:2' is not a server URL"):
        make_judge(f"ollama:{MODEL}", host="http://h:1:2", host_option="judge.host")
