"""`seal grade import` and the run's imported verdicts: malformed grading folders are refused in one line, naming
the file, and nothing is written then."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from grading.bundle import write_bundle
from runners.cli.grade import grade
from runners.deferred import DeferredGradingError, export_bundle, imported_verdicts
from tests.unit.grading.conftest import qa_items


def _run(tmp_path: Path) -> tuple[Path, Path]:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": "r1"}))
    bundle = export_bundle(run_dir, "it0", [i.to_json() for i in qa_items(2)], {"stage": "it0"})
    return run_dir, bundle


def _export(grades: Path, bundle: Path, verdicts: dict[str, Any], **fields: Any) -> None:
    grades.mkdir(exist_ok=True)
    header = json.loads(bundle.read_text().splitlines()[0])
    source = {"path": str(bundle), "sha256": hashlib.sha256(bundle.read_bytes()).hexdigest(),
              "provenance": header["provenance"]}  # fmt: skip
    data = {"format": "seal-verdicts", "version": 1, "judges": ["ollama:judge:1b"], "rubric": "seal-yesno@1",
            "inputs": [source], "verdicts": {k: {"verdict": v} for k, v in verdicts.items()}, **fields}  # fmt: skip
    (grades / "verdicts.export.json").write_text(json.dumps(data))


def _import(run_dir: Path, grades: Path) -> Any:
    return CliRunner().invoke(grade, ["import", str(run_dir), str(grades)])


def test_valid_labels_import(tmp_path: Path) -> None:
    run_dir, bundle = _run(tmp_path)
    _export(tmp_path / "g", bundle, {"q0": "correct", "q1": None})
    result = _import(run_dir, tmp_path / "g")
    assert result.exit_code == 0, result.output
    assert imported_verdicts(run_dir, "it0") == {"q0": "correct", "q1": None}


def test_an_export_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    run_dir, _ = _run(tmp_path)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "verdicts.export.json").write_text("[]")
    result = _import(run_dir, tmp_path / "g")
    assert result.exit_code == 2 and "expected a JSON object" in result.output, result.output
    assert "verdicts.export.json" in result.output and isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("label", ["maybe", "yes", "CORRECT"])
def test_a_verdict_outside_the_rubric_is_refused(tmp_path: Path, label: str) -> None:
    run_dir, bundle = _run(tmp_path)
    _export(tmp_path / "g", bundle, {"q0": label, "q1": "incorrect"})
    result = _import(run_dir, tmp_path / "g")
    assert result.exit_code == 2, result.output
    assert "verdicts.q0.verdict" in result.output and "is not a verdict of rubric seal-yesno@1" in result.output
    assert not (run_dir / "grading" / "it0" / "verdicts.json").exists()


def test_grades_of_a_seal_export_bundle_are_explained(tmp_path: Path) -> None:
    run_dir, _ = _run(tmp_path)
    exported = write_bundle(tmp_path / "export.jsonl", qa_items(2), {"run_dir": str(run_dir), "experiment": "x"})
    _export(tmp_path / "g", exported, {"q0": "correct"})
    result = _import(run_dir, tmp_path / "g")
    assert result.exit_code == 2, result.output
    assert "is a `seal export` bundle" in result.output and "grading/it0/bundle.jsonl" in result.output
    assert "exactly as exported" not in result.output


def test_a_corrupt_imported_verdicts_file_is_named(tmp_path: Path) -> None:
    run_dir, _ = _run(tmp_path)
    path = run_dir / "grading" / "it0" / "verdicts.json"
    path.write_text('{"verd\x01icts": 1}')
    with pytest.raises(DeferredGradingError, match="verdicts.json"):
        imported_verdicts(run_dir, "it0")
    path.write_text("[]")
    with pytest.raises(DeferredGradingError, match="verdicts.json"):
        imported_verdicts(run_dir, "it0")
