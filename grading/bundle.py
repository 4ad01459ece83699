"""Inputs to grading: this project's export bundles and the published SEAL result files.

Export bundle (``*.jsonl``, UTF-8, one JSON object per line)
-------------------------------------------------------------
Line 1 is a header::

    {"format": "seal-grading-bundle", "version": 1, "n_items": 2, "provenance": {"run_id": "...", ...}}

``n_items`` lets a reader notice a truncated download. Every further line is one item::

    {"item_id": "squad/p17/q3/adapter", "kind": "qa", "question": "Who ...?",
     "gold": ["Denver Broncos"], "prediction": "The Broncos", "group": "adapter", "labels": {"exact": false},
     "provenance": {"run_id": "...", "unit_id": "...", "stage": "eval", "model": "...", "config_hash": ""}}
    {"item_id": "arc/0a1d4ef5/0", "kind": "arc", "task_id": "0a1d4ef5", "question": "",
     "gold": [[[0, 1], [1, 0]]], "attempts": [[[0, 1], [1, 0]], "01\\n10"], "provenance": {...}}

Fields: ``item_id`` (stable, unique across the inputs of one grading run), ``kind`` (``qa`` | ``arc``),
``question`` (text; may be empty for ARC), ``gold`` (QA: non-empty list of acceptable answers; ARC: non-empty
list of acceptable grids, each a list of rows of integers 0-9), ``prediction`` (QA: the model's answer text),
``attempts`` (ARC: list of grids or raw model strings, best first), ``provenance`` (object: where the item
came from). Optional: ``group`` (report breakdown, default ``default``), ``task_id`` (ARC: tests of one task share
it; a task is solved iff all its tests are), ``labels`` (object of name -> bool: verdicts from elsewhere, e.g.
the published GPT-4.1 grader, used for the agreement report), ``outputs`` (ARC: ``{"total": N, "unparseable": U}``,
the model outputs behind the attempts, so outputs that never became an attempt are still reported). Unknown
fields are an error.

Published SEAL result file (``*.json``)
---------------------------------------
``{"articles": [{"title", "completions": [{"questions": [{"question", "answer", "baseline_answer",
"adapter_answer", "baseline_correct"?, "adapter_correct"?, "rep"?}]}]}]}``: each question yields two QA items
(groups ``baseline`` and ``adapter``); the published booleans become the label ``seal_published``.

Inputs are untrusted: sizes are capped, text is parsed as JSON only (never ``eval``, never pickle), and every
schema error names the file, the line and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from grading.metrics import Grid, parse_grid

BUNDLE_FORMAT = "seal-grading-bundle"
BUNDLE_VERSION = 1
DEFAULT_MAX_INPUT_BYTES = 256 * 2**20
MAX_ITEM_ID_CHARS = 512
_LOCATE_LIMIT_CHARS = 32 * 2**20
SEAL_LABEL = "seal_published"

_KINDS = ("qa", "arc")
_ITEM_FIELDS = (
    "item_id",
    "kind",
    "question",
    "gold",
    "prediction",
    "attempts",
    "provenance",
    "group",
    "task_id",
    "labels",
    "outputs",
)
_HEADER_FIELDS = ("format", "version", "n_items", "provenance")


class InputError(ValueError):
    """A bad input file: says which file, which line, which field, and what to do."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, field_name: str | None, message: str):
        self.path, self.line, self.field, self.message = str(path), line, field_name, message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field_name}': " if field_name else ""
        super().__init__(f"{where}: {what}{message}")


@dataclass(frozen=True)
class Item:
    """One thing to grade: a QA answer or the attempts at one ARC test output."""

    item_id: str
    kind: str
    question: str
    gold: tuple[Any, ...]  # tuple[str, ...] for qa, tuple[Grid, ...] for arc
    prediction: str | None = None
    attempts: tuple[Any, ...] | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    group: str = "default"
    task_id: str | None = None
    labels: Mapping[str, bool] = field(default_factory=dict)
    # ARC: {"total", "unparseable"} model outputs behind the attempts (the run's count: all views, before voting)
    outputs: Mapping[str, int] | None = None
    source: str | None = None  # the input file it was read from (set by read_inputs; not a bundle field)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"item_id": self.item_id, "kind": self.kind, "question": self.question}
        if self.kind == "qa":
            record["gold"] = list(self.gold)
            record["prediction"] = self.prediction
        else:
            record["gold"] = [[list(row) for row in grid] for grid in self.gold]
            record["attempts"] = [a if isinstance(a, str) else [list(r) for r in a] for a in self.attempts or ()]
            if self.task_id is not None:
                record["task_id"] = self.task_id
            if self.outputs is not None:
                record["outputs"] = dict(self.outputs)
        record["group"] = self.group
        if self.labels:
            record["labels"] = dict(self.labels)
        record["provenance"] = dict(self.provenance)
        return record


@dataclass(frozen=True)
class InputSource:
    path: str
    sha256: str
    format: str  # "bundle" | "seal"
    n_items: int
    provenance: Mapping[str, Any]


@dataclass(frozen=True)
class Inputs:
    items: list[Item]
    sources: list[InputSource]


# ------------------------------------------------------------------------------------------ validation


def _require(cond: bool, path: str | Path, line: int | None, name: str, message: str) -> None:
    if not cond:
        raise InputError(path, line, name, message)


def _string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def item_from_json(record: object, path: str | Path = "<memory>", line: int | None = None) -> Item:
    """Validate one item object (from a bundle line or handed over by an exporter)."""
    _require(isinstance(record, dict), path, line, "item", "each item line must be a JSON object")
    assert isinstance(record, dict)
    unknown = sorted(set(record) - set(_ITEM_FIELDS))
    _require(
        not unknown,
        path,
        line,
        unknown[0] if unknown else "",
        f"unknown field; known: {', '.join(_ITEM_FIELDS)}",
    )
    item_id = record.get("item_id")
    _require(
        isinstance(item_id, str) and 0 < len(item_id) <= MAX_ITEM_ID_CHARS,
        path,
        line,
        "item_id",
        f"must be a non-empty string of at most {MAX_ITEM_ID_CHARS} characters",
    )
    kind = record.get("kind")
    _require(kind in _KINDS, path, line, "kind", f"must be one of {list(_KINDS)}, got {kind!r}")
    question = record.get("question", "" if kind == "arc" else None)
    _require(isinstance(question, str), path, line, "question", "must be a string")
    provenance = record.get("provenance")
    _require(isinstance(provenance, dict), path, line, "provenance", "must be an object (run id, unit id, ...)")
    group = record.get("group", "default")
    _require(isinstance(group, str) and bool(group), path, line, "group", "must be a non-empty string")
    labels = record.get("labels", {})
    _require(
        isinstance(labels, dict) and all(isinstance(v, bool) for v in labels.values()),
        path,
        line,
        "labels",
        "must be an object mapping label names to true/false",
    )
    gold = record.get("gold")
    if kind == "qa":
        _require(_string_list(gold) and len(gold) > 0, path, line, "gold", "must be a non-empty list of strings")
        prediction = record.get("prediction")
        _require(isinstance(prediction, str), path, line, "prediction", "must be a string (may be empty)")
        _require("attempts" not in record, path, line, "attempts", "only ARC items carry attempts")
        _require("outputs" not in record, path, line, "outputs", "only ARC items carry output counts")
        return Item(item_id, kind, question, tuple(gold), prediction, None, provenance, group, None, labels)
    _require(isinstance(gold, list) and len(gold) > 0, path, line, "gold", "must be a non-empty list of grids")
    grids: list[Grid] = []
    for index, candidate in enumerate(gold):
        grid, reason = parse_grid(candidate) if isinstance(candidate, list) else (None, "not a list of rows")
        _require(grid is not None, path, line, f"gold[{index}]", f"not a valid grid: {reason}")
        assert grid is not None
        grids.append(grid)
    attempts = record.get("attempts")
    _require(
        isinstance(attempts, list) and all(isinstance(a, (list, str)) for a in attempts),
        path,
        line,
        "attempts",
        "must be a list of grids or strings (unparseable ones are counted, not rejected)",
    )
    _require("prediction" not in record, path, line, "prediction", "ARC items carry attempts, not a prediction")
    task_id = record.get("task_id", item_id)
    _require(isinstance(task_id, str) and bool(task_id), path, line, "task_id", "must be a non-empty string")
    frozen_attempts = tuple(a if isinstance(a, str) else _freeze(a) for a in attempts)
    outputs = record.get("outputs")
    _require(
        outputs is None
        or (
            isinstance(outputs, dict)
            and set(outputs) == {"total", "unparseable"}
            and all(type(v) is int and v >= 0 for v in outputs.values())
            and outputs["unparseable"] <= outputs["total"]
        ),
        path,
        line,
        "outputs",
        'must be {"total": N, "unparseable": U} with 0 <= U <= N (the model outputs behind the attempts)',
    )
    return Item(
        item_id, kind, question, tuple(grids), None, frozen_attempts, provenance, group, task_id, labels, outputs
    )


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


# ---------------------------------------------------------------------------------------------- writing


def write_bundle(
    path: str | os.PathLike[str], items: Iterable[Item | Mapping[str, Any]], provenance: Mapping[str, Any]
) -> Path:
    """Write an export bundle atomically (temp file, fsync, rename). Items are validated first.

    ``provenance`` describes the whole export (run id, config hash, code version, model ...); each item
    carries its own provenance too. Raises ``InputError`` on an invalid item or a duplicate id, with the path
    ``<export>`` and the item's position (1-based) as its line; nothing is written then.
    """
    target = Path(path)
    validated: list[Item] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        record = item.to_json() if isinstance(item, Item) else dict(item)
        checked = item_from_json(record, "<export>", index + 1)
        _require(checked.item_id not in seen, "<export>", index + 1, "item_id", f"duplicate id {checked.item_id!r}")
        seen.add(checked.item_id)
        validated.append(checked)
    header = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "n_items": len(validated),
        "provenance": dict(provenance),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(header, ensure_ascii=False) + "\n")
            for item in validated:
                handle.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


# ---------------------------------------------------------------------------------------------- reading


def _read_capped(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(path, None, None, f"cannot read: {exc.strerror}") from None
    if size > max_bytes:
        raise InputError(
            path,
            None,
            None,
            f"file is {size / 2**20:.1f} MiB, over the input limit of "
            f"{max_bytes / 2**20:.1f} MiB (raise it with --max-input-mb if the file is trusted)",
        )
    return path.read_bytes()


def _parse_bundle(path: Path, data: bytes) -> tuple[dict[str, Any], list[Item]]:
    lines = data.split(b"\n")
    items: list[Item] = []
    header: dict[str, Any] | None = None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except UnicodeDecodeError:
            raise InputError(path, number, None, "line is not valid UTF-8") from None
        except ValueError as exc:
            raise InputError(path, number, None, f"not valid JSON ({exc})") from None
        except RecursionError:
            raise InputError(path, number, None, "JSON nested too deeply") from None
        if header is None:
            header = _check_header(path, number, record)
            continue
        items.append(item_from_json(record, path, number))
    if header is None:
        raise InputError(path, 1, "format", f"empty file: expected a {BUNDLE_FORMAT!r} header line")
    if header["n_items"] != len(items):
        raise InputError(
            path,
            None,
            "n_items",
            f"header promises {header['n_items']} items but the file holds "
            f"{len(items)}: the file is truncated or was edited; export or download it again",
        )
    return header, items


def _check_header(path: Path, line: int, record: object) -> dict[str, Any]:
    _require(
        isinstance(record, dict) and record.get("format") == BUNDLE_FORMAT,
        path,
        line,
        "format",
        f'first line must be the header {{"format": "{BUNDLE_FORMAT}", ...}}',
    )
    assert isinstance(record, dict)
    unknown = sorted(set(record) - set(_HEADER_FIELDS))
    _require(
        not unknown,
        path,
        line,
        unknown[0] if unknown else "",
        f"unknown header field; known: {_HEADER_FIELDS}",
    )
    version = record.get("version")
    _require(
        version == BUNDLE_VERSION,
        path,
        line,
        "version",
        f"bundle version {version!r} is not supported (this reader knows version {BUNDLE_VERSION})",
    )
    n_items = record.get("n_items")
    _require(
        isinstance(n_items, int) and not isinstance(n_items, bool) and n_items >= 0,
        path,
        line,
        "n_items",
        "must be a non-negative integer",
    )
    _require(isinstance(record.get("provenance"), dict), path, line, "provenance", "must be an object")
    return record


def read_bundle(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> list[Item]:
    """Read and validate an export bundle."""
    return _parse_bundle(Path(path), _read_capped(Path(path), max_bytes))[1]


def _json_line_of(text: str, keys: Sequence[str | int]) -> int | None:
    """Line of the deepest JSON object on ``keys`` (re-parse with offsets; only used to word an error)."""
    if len(text) > _LOCATE_LIMIT_CHARS:
        return None  # the pure-Python scanner is slow: past this size the error names the field path only
    starts: dict[int, int] = {}
    decoder = json.JSONDecoder()
    parse_object = json.decoder.JSONObject

    def recording_parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[Any, int]:
        result, end = parse_object(s_and_end, *args)
        starts[id(result)] = s_and_end[1]
        return result, end

    decoder.parse_object = recording_parse_object  # type: ignore[attr-defined]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    try:
        node: Any = decoder.decode(text)
    except (ValueError, RecursionError):
        return None
    offset = starts.get(id(node), 0)
    for key in keys:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
        offset = starts.get(id(node), offset)
    return text.count("\n", 0, offset) + 1


def read_seal_results(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> list[Item]:
    """Turn a published SEAL result file into QA items (baseline and adapter answer per question)."""
    file_path = Path(path)
    data = _read_capped(file_path, max_bytes)
    return _seal_items(file_path, data, hashlib.sha256(data).hexdigest())


def _seal_items(path: Path, data: bytes, digest: str) -> list[Item]:
    try:
        text = data.decode("utf-8")
        document = json.loads(text)
    except UnicodeDecodeError:
        raise InputError(path, None, None, "not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, exc.lineno, None, f"not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise InputError(path, None, None, "JSON nested too deeply") from None

    def fail(keys: Sequence[str | int], name: str, message: str) -> InputError:
        dotted = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
        return InputError(path, _json_line_of(text, keys), f"{dotted}.{name}" if dotted else name, message)

    if not isinstance(document, dict) or not isinstance(document.get("articles"), list):
        raise fail([], "articles", "a SEAL result file is an object with a list 'articles'")
    items: list[Item] = []
    prefix = f"seal-{digest[:12]}"
    for a_index, article in enumerate(document["articles"]):
        where: list[str | int] = ["articles", a_index]
        if not isinstance(article, dict):
            raise fail(where[:1], str(a_index), "each article must be an object")
        title = article.get("title", "")
        if not isinstance(title, str):
            raise fail(where, "title", "must be a string")
        completions = article.get("completions")
        if not isinstance(completions, list):
            raise fail(where, "completions", "must be a list")
        for c_index, completion in enumerate(completions):
            c_where = [*where, "completions", c_index]
            questions = completion.get("questions") if isinstance(completion, dict) else None
            if not isinstance(questions, list):
                raise fail(c_where, "questions", "must be a list")
            for q_index, question in enumerate(questions):
                q_where = [*c_where, "questions", q_index]
                items.extend(_seal_question_items(question, q_where, fail, prefix, title, (a_index, c_index, q_index)))
    return items


def _seal_question_items(
    question: object, where: list[str | int], fail: Any, prefix: str, title: str, index: tuple[int, int, int]
) -> list[Item]:
    if not isinstance(question, dict):
        raise fail(where[:-1], str(where[-1]), "each question must be an object")
    text = question.get("question")
    if not isinstance(text, str):
        raise fail(where, "question", "must be a string")
    gold = question.get("answer")
    golds = [gold] if isinstance(gold, str) else gold
    if not _string_list(golds) or not golds:
        raise fail(where, "answer", "must be a string or a non-empty list of strings (the gold answer)")
    a_index, c_index, q_index = index
    items = []
    for arm in ("baseline", "adapter"):
        answer = question.get(f"{arm}_answer")
        if not isinstance(answer, str):
            raise fail(where, f"{arm}_answer", "must be a string")
        labels: dict[str, bool] = {}
        if f"{arm}_correct" in question:
            label = question[f"{arm}_correct"]
            if not isinstance(label, bool):
                raise fail(where, f"{arm}_correct", "must be true or false")
            labels[SEAL_LABEL] = label
        provenance = {
            "source": "seal",
            "article": a_index,
            "completion": c_index,
            "question": q_index,
            "rep": question.get("rep"),
            "arm": arm,
        }
        items.append(
            Item(
                item_id=f"{prefix}/a{a_index}/c{c_index}/q{q_index}/{arm}",
                kind="qa",
                # The published grader saw the question as the answering model did: with its topic line.
                question=f"Topic: {title}\n{text}" if title else text,
                gold=tuple(golds),
                prediction=answer,
                provenance=provenance,
                group=arm,
                labels=labels,
            )
        )
    return items


def _looks_like_bundle(data: bytes) -> bool:
    first_line = data.lstrip()[:4096].split(b"\n", 1)[0]
    try:
        header = json.loads(first_line)
    except ValueError:
        return False
    return isinstance(header, dict) and "format" in header


def read_inputs(paths: Sequence[str | os.PathLike[str]], max_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> Inputs:
    """Read bundles and SEAL result files (told apart by content), refusing duplicate item ids across them."""
    items: list[Item] = []
    sources: list[InputSource] = []
    first_seen: dict[str, str] = {}
    for raw_path in paths:
        path = Path(raw_path)
        data = _read_capped(path, max_bytes)
        digest = hashlib.sha256(data).hexdigest()
        if _looks_like_bundle(data):
            header, found = _parse_bundle(path, data)
            source = InputSource(str(path), digest, "bundle", len(found), header["provenance"])
        elif data.lstrip()[:1] == b"{":
            found = _seal_items(path, data, digest)
            source = InputSource(str(path), digest, "seal", len(found), {"source": "seal"})
        else:
            raise InputError(
                path,
                1,
                None,
                f"neither a grading bundle (a JSONL file whose first line is a "
                f"{BUNDLE_FORMAT!r} header) nor a SEAL result file (a JSON object with 'articles')",
            )
        for item in found:
            if item.item_id in first_seen:
                raise InputError(
                    path,
                    None,
                    "item_id",
                    f"duplicate id {item.item_id!r} (first seen in "
                    f"{first_seen[item.item_id]}); item ids must be unique across the inputs",
                )
            first_seen[item.item_id] = str(path)
        items.extend(replace(item, source=str(path)) for item in found)
        sources.append(source)
    return Inputs(items, sources)
