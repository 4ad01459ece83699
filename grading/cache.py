"""A content-addressed SQLite cache of judge calls that doubles as the resume journal.

Key: sha256 over the judge name, the model digest, the server version, the rubric hash, the rendered messages,
the options, the schema and the vote index. Each judgement is committed as it arrives (WAL mode,
``synchronous=NORMAL``: a commit is a write to the WAL, no fsync per item; a SIGKILLed process loses nothing
it committed), with the raw replies, the parsed verdict, token counts and durations.

Only what the *model* said is cached (scored, unparseable, truncated). Infrastructure failures are recorded in
the run's failure table and retried by the next run. The ``run_*`` tables describe the latest grading run into
this folder (its items, their deterministic metrics, which key answers which item/judge/vote):
``verdicts.jsonl`` is rebuilt from them, so a killed run still has a readable report.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_LOOKUP_CHUNK = 500  # stays under SQLite's bound-parameter limit on old builds

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY,
    judge TEXT NOT NULL,
    vote INTEGER NOT NULL,
    status TEXT NOT NULL,
    verdict TEXT,
    reason TEXT,
    request TEXT NOT NULL,
    replies TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    prompt_ns INTEGER,
    eval_ns INTEGER,
    total_ns INTEGER,
    latency_s REAL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run_items (
    seq INTEGER PRIMARY KEY, item_id TEXT NOT NULL UNIQUE, item TEXT NOT NULL, metrics TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS run_plan (
    item_id TEXT NOT NULL, judge TEXT NOT NULL, vote INTEGER NOT NULL, key TEXT, rule_verdict TEXT,
    PRIMARY KEY (item_id, judge, vote)
);
CREATE TABLE IF NOT EXISTS run_failures (
    item_id TEXT NOT NULL, judge TEXT NOT NULL, vote INTEGER NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (item_id, judge, vote)
);
"""


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def judgement_key(
    *,
    judge: str,
    digest: str,
    server_version: str,
    rubric_hash: str,
    messages: Sequence[Mapping[str, str]],
    options: Mapping[str, Any],
    schema: Mapping[str, Any] | None,
    vote: int,
) -> str:
    material = canonical_json(
        {
            "judge": judge,
            "digest": digest,
            "server": server_version,
            "rubric": rubric_hash,
            "messages": list(messages),
            "options": dict(options),
            "schema": schema,
            "vote": vote,
        }
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


@dataclass
class Judgement:
    key: str
    judge: str
    vote: int
    status: str  # "scored" | "unparseable" | "truncated"
    verdict: str | None
    reason: str | None
    request: Mapping[str, Any]
    replies: list[dict[str, Any]]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_ns: int | None = None
    eval_ns: int | None = None
    total_ns: int | None = None
    latency_s: float | None = None
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class PlanRow:
    item_id: str
    judge: str
    vote: int
    key: str | None  # None when a rule decided without a call (e.g. an empty answer)
    rule_verdict: str | None = None


class CacheError(Exception):
    """The cache file cannot be used (not a database, or a damaged one); the message names it."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path}: not a usable grading cache ({detail})")
        self.path, self.detail = path, detail


class JudgementCache:
    """One SQLite connection for the whole run; lookups are batched.

    A file that is not an SQLite database, or a damaged one, raises ``CacheError`` when opened."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: each store() is its own short transaction, committed on return.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            # The busy timeout first: switching to WAL takes a lock that another worker of the run may hold.
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            # A truncated file can open and still fail on a later read: check its pages once now.
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems))
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise CacheError(self.path, str(exc)) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> JudgementCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------------- judgements

    def lookup(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` are cached (batched: one query per 500 keys)."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0] for row in self._db.execute(f"SELECT key FROM judgements WHERE key IN ({marks})", chunk)
            )
        return found

    def store(self, j: Judgement) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO judgements VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                j.key,
                j.judge,
                j.vote,
                j.status,
                j.verdict,
                j.reason,
                canonical_json(j.request),
                json.dumps(j.replies, ensure_ascii=False),
                len(j.replies),
                j.prompt_tokens,
                j.completion_tokens,
                j.prompt_ns,
                j.eval_ns,
                j.total_ns,
                j.latency_s,
                j.created_at,
            ),
        )

    def judgements_by_key(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """key → {status, verdict, reason} of the cached judgements among ``keys`` (batched)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, status, verdict, reason FROM judgements WHERE key IN ({marks})"
            for key, status, verdict, reason in self._db.execute(query, chunk):
                found[key] = {"status": status, "verdict": verdict, "reason": reason}
        return found

    def judgement_rows(self) -> list[dict[str, Any]]:
        cursor = self._db.execute("SELECT * FROM judgements ORDER BY created_at")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    def run_counters(self, since: float | None = None) -> list[dict[str, Any]]:
        """Latency and server counters of the judgements the current run refers to (each once); with `since`,
        only those stored from then on (the ones this run asked for, not the ones it found in the cache)."""
        cursor = self._db.execute(
            "SELECT latency_s, attempts, prompt_tokens, completion_tokens, prompt_ns, eval_ns FROM judgements"
            " WHERE key IN (SELECT key FROM run_plan WHERE key IS NOT NULL) AND created_at >= ?",
            (float("-inf") if since is None else since,),
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    # --------------------------------------------------------------------------------------- run tables

    def start_run(
        self, meta: Mapping[str, Any], items: Iterable[tuple[str, Any, Any]], plan: Iterable[PlanRow]
    ) -> None:
        """Replace the run tables in one transaction: (item_id, item json, metrics json) rows and the plan."""
        with self._transaction():
            for table in ("run_meta", "run_items", "run_plan", "run_failures"):
                self._db.execute(f"DELETE FROM {table}")
            self._db.executemany(
                "INSERT INTO run_meta VALUES (?,?)",
                [(name, json.dumps(value)) for name, value in meta.items()],
            )
            self._db.executemany(
                "INSERT INTO run_items (item_id, item, metrics) VALUES (?,?,?)",
                (
                    (item_id, json.dumps(item, ensure_ascii=False), json.dumps(metrics))
                    for item_id, item, metrics in items
                ),
            )
            self._db.executemany(
                "INSERT INTO run_plan VALUES (?,?,?,?,?)",
                ((p.item_id, p.judge, p.vote, p.key, p.rule_verdict) for p in plan),
            )

    def record_failure(self, item_id: str, judge: str, vote: int, reason: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO run_failures VALUES (?,?,?,?)", (item_id, judge, vote, reason))

    def set_meta(self, name: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO run_meta VALUES (?,?)", (name, json.dumps(value)))

    def meta(self) -> dict[str, Any]:
        return {name: json.loads(value) for name, value in self._db.execute("SELECT name, value FROM run_meta")}

    def run_items(self) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        rows = self._db.execute("SELECT item_id, item, metrics FROM run_items ORDER BY seq")
        return [(item_id, json.loads(item), json.loads(metrics)) for item_id, item, metrics in rows]

    def run_votes(self) -> list[dict[str, Any]]:
        """Every planned (item, judge, vote) with its judgement or failure, if any."""
        cursor = self._db.execute(
            "SELECT p.item_id, p.judge, p.vote, p.key, p.rule_verdict, j.status, j.verdict, j.reason,"
            " j.replies, j.attempts, j.prompt_tokens, j.completion_tokens, j.prompt_ns, j.eval_ns,"
            " j.total_ns, j.latency_s, f.reason AS failure"
            " FROM run_plan p LEFT JOIN judgements j ON j.key = p.key"
            " LEFT JOIN run_failures f ON f.item_id = p.item_id AND f.judge = p.judge AND f.vote = p.vote"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
