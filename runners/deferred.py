"""Grading deferred to another machine: a run exports its answers as a bundle, `seal grade` grades the bundle
where a judge answers (a laptop with Ollama), and `seal grade import` brings the verdicts back into the run.

Inside a run directory::

    grading/<name>/bundle.jsonl     the exported answers (grading bundle format; header provenance: run_id, export)
    grading/<name>/verdicts.json    the imported verdicts: {"format": "seal-run-verdicts", "version": 1,
                                    "run_id", "export", "bundle_sha256", "verdicts": {item_id: label | null},
                                    "imports": [{"from", "judges", "rubric", "scored", "unscored"}]}

A bundle once handed out never changes silently: exporting different items under an existing name is refused.
An import is checked against the bundle it belongs to (the sha256 the grading run recorded for its input), must come
from the same run, and may only name the bundle's items; a later import fills in what an earlier one left
unscored, and a scored verdict is never replaced by an unscored one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_VERDICTS_FORMAT, RUN_VERDICTS_VERSION = "seal-run-verdicts", 1
EXPORT_FILE = "verdicts.export.json"


class DeferredGradingError(ValueError):
    """A grading folder or bundle that cannot be used as asked; the message says which file and what to do."""


@dataclass(frozen=True)
class ImportSummary:
    name: str
    items: int
    scored: int
    unscored: int
    missing: int  # bundle items without any verdict yet

    def line(self) -> str:
        text = f"{self.name}: {self.scored} of {self.items} answers scored, {self.unscored} unscored"
        return text + (f", {self.missing} without a verdict yet" if self.missing else "")


def grading_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "grading"


def bundle_path(run_dir: Path, name: str) -> Path:
    return grading_dir(run_dir) / name / "bundle.jsonl"


def _verdicts_path(run_dir: Path, name: str) -> Path:
    return grading_dir(run_dir) / name / "verdicts.json"


def run_id(run_dir: Path) -> str:
    """The run's id from its manifest (older manifests: a hash of the manifest's config and start)."""
    path = Path(run_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DeferredGradingError(f"{run_dir} is not a run directory (no readable manifest.json)") from None
    if manifest.get("run_id"):
        return str(manifest["run_id"])
    basis = json.dumps({"config_hash": manifest.get("config_hash"), "started": manifest.get("started_at")})
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bundle_items(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[1:] if line.strip()]


def export_bundle(run_dir: Path, name: str, items: Sequence[Mapping[str, Any]], provenance: Mapping[str, Any]) -> Path:
    """Write `grading/<name>/bundle.jsonl` (atomic). Re-exporting the same items leaves the file as it is."""
    from grading.bundle import write_bundle

    path = bundle_path(run_dir, name)
    wanted = [dict(item) for item in items]
    if path.exists():
        if _bundle_items(path) == json.loads(json.dumps(wanted)):
            return path
        raise DeferredGradingError(
            f"{path} exists with other answers: a bundle once exported is not rewritten (its grades may be on "
            "their way back); remove the folder by hand if you really mean to export it again"
        )
    header = {**dict(provenance), "run_id": run_id(run_dir), "export": name}
    return write_bundle(path, wanted, header)


def exported_names(run_dir: Path) -> list[str]:
    root = grading_dir(run_dir)
    return sorted(p.parent.name for p in root.glob("*/bundle.jsonl")) if root.is_dir() else []


def imported_verdicts(run_dir: Path, name: str) -> dict[str, str | None] | None:
    """item id → verdict (None: unscored) of what was imported for bundle `name`; None when nothing was."""
    path = _verdicts_path(run_dir, name)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeferredGradingError(
            f"{path}: cannot read the imported verdicts ({exc}); delete it and run `seal grade import` again"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("verdicts"), dict):
        raise DeferredGradingError(
            f"{path}: field 'verdicts' (an object) is missing; delete the file and run `seal grade import` again"
        )
    return dict(data["verdicts"])


def pending_exports(run_dir: Path) -> list[str]:
    """Exported bundles some of whose items have no imported verdict yet."""
    out = []
    for name in exported_names(run_dir):
        verdicts = imported_verdicts(run_dir, name) or {}
        if any(item["item_id"] not in verdicts for item in _bundle_items(bundle_path(run_dir, name))):
            out.append(name)
    return out


def _read_export(grades_dir: Path) -> dict[str, Any]:
    from grading.report import VERDICTS_FORMAT, VERDICTS_VERSION

    path = Path(grades_dir) / EXPORT_FILE
    if not path.is_file():
        raise DeferredGradingError(
            f"{grades_dir} holds no {EXPORT_FILE}: give the --out folder of a `seal grade BUNDLE --judge …` run "
            "(a run without a judge computes metrics only and writes none)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DeferredGradingError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DeferredGradingError(
            f"{path}: expected a JSON object ({VERDICTS_FORMAT!r}), got a {type(data).__name__}; give the --out "
            "folder of a `seal grade BUNDLE --judge …` run"
        )
    if data.get("format") != VERDICTS_FORMAT:
        raise DeferredGradingError(f"{path}: field 'format': expected {VERDICTS_FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != VERDICTS_VERSION:
        raise DeferredGradingError(
            f"{path}: field 'version': this version reads version {VERDICTS_VERSION}, got {data.get('version')!r}"
        )
    if not isinstance(data.get("verdicts"), dict) or not isinstance(data.get("inputs"), list):
        raise DeferredGradingError(f"{path}: fields 'verdicts' (an object) and 'inputs' (a list) are required")
    for item_id, verdict in data["verdicts"].items():
        if not isinstance(verdict, dict) or not (verdict.get("verdict") is None or isinstance(verdict["verdict"], str)):
            raise DeferredGradingError(f"{path}: field 'verdicts.{item_id}': expected {{\"verdict\": label or null}}")
    labels: set[str] | None = None
    for item_id, verdict in data["verdicts"].items():
        if verdict["verdict"] is None:
            continue
        labels = _rubric_labels(path, data.get("rubric")) if labels is None else labels
        if verdict["verdict"] not in labels:
            raise DeferredGradingError(
                f"{path}: field 'verdicts.{item_id}.verdict': {verdict['verdict']!r} is not a verdict of rubric "
                f"{data.get('rubric') or '(none named)'} (one of {', '.join(sorted(labels))}, or null: unscored); "
                "grade the bundle again rather than editing the file"
            )
    return data


def _rubric_labels(path: Path, rubric: Any) -> set[str]:
    """The verdicts a grading with ``rubric`` can give (any known rubric's when the file names none)."""
    from grading.rubrics import RUBRICS, get_rubric

    if rubric is None:
        return {label for r in RUBRICS.values() for label in r.labels.values()}
    try:
        return set(get_rubric(str(rubric)).labels.values())
    except ValueError as exc:
        raise DeferredGradingError(f"{path}: field 'rubric': {exc}") from None


def import_verdicts(run_dir: Path, grades_dir: Path) -> list[ImportSummary]:
    """Bring the verdicts of a grading folder into the run's bundles they belong to; nothing is written unless
    every check passes."""
    from runners.store import atomic_write_text

    run_dir, grades_dir = Path(run_dir), Path(grades_dir)
    mine = run_id(run_dir)
    export = _read_export(grades_dir)
    by_sha = {_sha256(bundle_path(run_dir, n)): n for n in exported_names(run_dir)}
    if not by_sha:
        raise DeferredGradingError(f"{run_dir} has exported no grading bundle (grading/*/bundle.jsonl)")
    matched: list[tuple[str, str]] = []
    for source in export["inputs"]:
        provenance = source.get("provenance") or {}
        other = provenance.get("run_id")
        if other is not None and other != mine:
            raise DeferredGradingError(
                f"{grades_dir} graded a bundle of run {other} ({source.get('path')}), not of this run ({mine}, "
                f"{run_dir}): import it into its own run directory"
            )
        name = by_sha.get(source.get("sha256", ""))
        if name is None:
            known = ", ".join(f"grading/{n}/bundle.jsonl" for n in by_sha.values())
            if "export" not in provenance and "run_dir" in provenance:  # the header of a `seal export` bundle
                raise DeferredGradingError(
                    f"{grades_dir}: its input {source.get('path')} is a `seal export` bundle; `seal grade import` "
                    f"needs the grades of the run's own bundle ({known}: what the deferred stage wrote), "
                    "not of a `seal export` bundle: grade that file and import its --out folder"
                )
            raise DeferredGradingError(
                f"{grades_dir}: its input {source.get('path')} is none of this run's bundles ({known}) byte for "
                "byte; grade the bundle exactly as exported"
            )
        matched.append((name, source["sha256"]))
    summaries = []
    pending_writes = []
    for name, sha in matched:
        ids = {item["item_id"] for item in _bundle_items(bundle_path(run_dir, name))}
        incoming = {k: v["verdict"] for k, v in export["verdicts"].items() if k in ids}
        previous = imported_verdicts(run_dir, name) or {}
        merged = dict(previous)
        for item_id, verdict in incoming.items():
            if verdict is not None or merged.get(item_id) is None:
                merged[item_id] = verdict  # a scored verdict is never replaced by an unscored one
        scored = sum(1 for v in merged.values() if v is not None)
        summary = ImportSummary(name, len(ids), scored, len(merged) - scored, len(ids - set(merged)))
        path = _verdicts_path(run_dir, name)
        old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        record = {
            "format": RUN_VERDICTS_FORMAT,
            "version": RUN_VERDICTS_VERSION,
            "run_id": mine,
            "export": name,
            "bundle_sha256": sha,
            "verdicts": dict(sorted(merged.items())),
            "imports": [
                *old.get("imports", []),
                {
                    "from": str(grades_dir),
                    "judges": export.get("judges"),
                    "rubric": export.get("rubric"),
                    "scored": sum(1 for v in incoming.values() if v is not None),
                    "unscored": sum(1 for v in incoming.values() if v is None),
                },
            ],
        }
        if old.get("verdicts") == record["verdicts"]:
            record["imports"] = old.get("imports", [])  # nothing new: the file stays as it was
        pending_writes.append((path, record))
        summaries.append(summary)
    unknown = set(export["verdicts"]) - {
        item["item_id"] for name, _ in matched for item in _bundle_items(bundle_path(run_dir, name))
    }
    if unknown:
        raise DeferredGradingError(
            f"{grades_dir}: {len(unknown)} verdicts name items of none of the matched bundles "
            f"(e.g. {sorted(unknown)[0]!r}); was the bundle edited before grading?"
        )
    for path, record in pending_writes:
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return summaries
