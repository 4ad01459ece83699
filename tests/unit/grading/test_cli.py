"""``seal grade`` and ``seal grade report``: exit codes, messages, and a run with torch made unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from grading.bundle import write_bundle
from grading.report import read_verdicts
from runners.cli.grade import grade
from tests.fixtures.ollama_server import FakeOllama
from tests.unit.grading.conftest import MODEL, qa_items

REPO = Path(__file__).resolve().parents[3]
FAST = ["--timeout", "2", "--retries", "2", "--backoff", "0.01", "--variance-sample", "2", "--quiet"]

_SEAL = {
    "articles": [
        {
            "title": "Super Bowl 50",
            "completions": [
                {
                    "text": "x",
                    "questions": [
                        {
                            "question": "Who won?",
                            "answer": "Denver Broncos",
                            "baseline_answer": "Carolina",
                            "adapter_answer": "Denver Broncos",
                            "baseline_correct": False,
                            "adapter_correct": True,
                        }
                    ],
                }
            ],
        }
    ]
}


@pytest.fixture
def inputs(tmp_path: Path) -> list[str]:
    bundle = write_bundle(tmp_path / "export.jsonl", qa_items(6), {"run_id": "r1"})
    seal = tmp_path / "seal_results.json"
    seal.write_text(json.dumps(_SEAL, indent=2))
    return [str(bundle), str(seal)]


def _invoke(*args: str):
    return CliRunner().invoke(grade, list(args), catch_exceptions=False)


def test_grade_then_report(server: FakeOllama, inputs: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _invoke(*inputs, "--judge", f"ollama:{MODEL}", "--host", server.url, "--out", str(out), *FAST)
    assert result.exit_code == 0, result.output
    assert "qa: 8 items" in result.output and "report:" in result.output
    assert {p.name for p in out.iterdir()} >= {"cache.sqlite", "verdicts.jsonl", "report.md", "report.json"}
    (out / "verdicts.jsonl").unlink()
    report = _invoke("report", str(out))
    assert report.exit_code == 0
    assert report.output.startswith("# Grading report") and "input labels `seal_published`" in report.output
    assert "items/s over" in report.output  # requests were sent: their rate is reported
    assert len(read_verdicts(out / "verdicts.jsonl")[1]) == 8  # rebuilt from the cache
    as_json = json.loads(_invoke("report", str(out), "--json").output)
    assert as_json["overall"]["qa"]["judges"][f"ollama:{MODEL}"]["accuracy"] == pytest.approx(5 / 8)
    again = _invoke("run", *inputs, "--judge", f"ollama:{MODEL}", "--host", server.url, "--out", str(out), *FAST)
    assert again.exit_code == 0
    assert len(server.chat_records()) == 10  # 8 items + 2 variance re-judges, none asked twice


def test_unscored_items_make_the_exit_code_non_zero_unless_allowed(
    server: FakeOllama, inputs: list[str], tmp_path: Path
) -> None:
    server.always("500")
    common = [*inputs, "--judge", f"ollama:{MODEL}", "--host", server.url, *FAST]
    result = _invoke(*common, "--out", str(tmp_path / "a"))
    assert result.exit_code == 3
    assert "stayed unscored" in result.output and "--allow-unscored" in result.output
    assert "stopped: server error 500" in result.output
    assert "by failed requests (run the same command again" in result.output and "--rescore" not in result.output
    assert _invoke(*common, "--out", str(tmp_path / "b"), "--allow-unscored").exit_code == 0


def test_replies_without_a_verdict_are_cached_so_the_advice_is_rescore_not_run_again(
    server: FakeOllama, inputs: list[str], tmp_path: Path
) -> None:
    server.always("garbage")
    common = [*inputs, "--judge", f"ollama:{MODEL}", "--host", server.url, "--out", str(tmp_path / "g"), *FAST]
    first = _invoke(*common)
    assert first.exit_code == 3
    assert "8 item(s) stayed unscored: 8 by replies that held no verdict" in first.output
    assert "pass --rescore" in first.output and "by failed requests" not in first.output
    sent = len(server.chat_records())
    server.always(None)
    assert _invoke(*common).exit_code == 3 and len(server.chat_records()) == sent  # read back from the cache
    assert _invoke(*common, "--rescore").exit_code == 0


def test_bad_input_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    header = {"format": "seal-grading-bundle", "version": 1, "n_items": 1, "provenance": {}}
    item = {"item_id": "x", "kind": "qa", "question": "q", "gold": "g", "prediction": "p", "provenance": {}}
    path.write_text(json.dumps(header) + "\n" + json.dumps(item) + "\n")
    result = _invoke(str(path), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert f"{path}:2: field 'gold'" in result.output


def test_a_missing_model_stops_before_grading(server: FakeOllama, inputs: list[str], tmp_path: Path) -> None:
    result = _invoke(
        *inputs, "--judge", "ollama:llama3.2:1b", "--host", server.url, "--out", str(tmp_path / "o"), *FAST
    )
    assert result.exit_code == 1
    assert "ollama pull llama3.2:1b" in result.output
    assert not server.chat_records(with_messages=False)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seal-strict", "--cot"], "exclude each other"),
        (["--seal-strict", "--rubric", "three-way"], "SEAL-strict needs seal-yesno"),
        (["--rubric", "nope"], "unknown rubric"),
        (["--judge", "openai-compat:http://x"], "openai-compat:<base_url>#<model>"),
    ],
)
def test_usage_errors(inputs: list[str], tmp_path: Path, flags: list[str], message: str) -> None:
    result = _invoke(*inputs, *flags, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and message in result.output


def test_without_a_judge_only_metrics_run(inputs: list[str], tmp_path: Path) -> None:
    result = _invoke(*inputs, "--out", str(tmp_path / "o"))
    assert result.exit_code == 0 and "EM" in result.output
    report = (tmp_path / "o" / "report.md").read_text()
    assert "items/s" not in report  # no requests: no rate over a wall time of nothing


def test_report_needs_a_grading_folder(tmp_path: Path) -> None:
    result = _invoke("report", str(tmp_path))
    assert result.exit_code == 2 and "holds no grading run" in result.output


_NO_TORCH = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "peft", "trl", "vllm", "accelerate"}:
            raise ImportError(f"{name} is not installed (blocked by the test)")
        return None
sys.meta_path.insert(0, Blocked())
from runners.cli.grade import grade
try:
    grade(sys.argv[1:], prog_name="seal grade", standalone_mode=False)
finally:
    print("heavy modules loaded:", sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers"}))
"""


def test_the_cli_grades_with_torch_unimportable(server: FakeOllama, inputs: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _NO_TORCH,
            *inputs,
            "--judge",
            f"ollama:{MODEL}",
            "--host",
            server.url,
            "--out",
            str(out),
            *FAST,
            "--judge",
            "ollama:other:1b",
            "--judge",
            "ollama:contrarian:1b",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "heavy modules loaded: []" in completed.stdout
    assert len(read_verdicts(out / "verdicts.jsonl")[1]) == 8


def test_the_cli_module_starts_without_importing_the_client() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, runners.cli.grade; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in {'grading', 'ollama', 'httpx', 'torch'}))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.stdout.strip() == "[]", completed.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "runners.cli.grade", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    ).stdout
    assert "seal grade report DIR" in help_text
