"""In-loop judging: verdicts per item, a cache shared by processes, failures unscored (loopback Ollama, real HTTP)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

from grading.inloop import judge_items_sync
from tests.fixtures.ollama_server import FakeOllama
from tests.unit.grading.conftest import MODEL, qa_items


def _dicts(n: int) -> list[dict]:
    return [item.to_json() for item in qa_items(n)]


def test_verdicts_come_back_per_item_and_a_second_call_is_answered_from_the_cache(
    server: FakeOllama, tmp_path: Path
) -> None:
    cache = tmp_path / "cache.sqlite"
    verdicts = judge_items_sync(_dicts(6), [f"ollama:{MODEL}"], cache, host=server.url, timeout=5)
    assert {k: v.verdict for k, v in verdicts.items()} == {
        f"q{i}": "incorrect" if i % 3 == 0 else "correct" for i in range(6)
    }
    asked = len(server.state.records)

    def item_chats(records: list) -> list:  # the preflight's warm-up call is not an item's
        return [r for r in records if r.path == "/api/chat" and "Question " in r.user_message]

    assert len(item_chats(server.state.records)) == 6
    again = judge_items_sync(_dicts(6), [f"ollama:{MODEL}"], cache, host=server.url, timeout=5)
    assert {k: v.verdict for k, v in again.items()} == {k: v.verdict for k, v in verdicts.items()}
    assert item_chats(server.state.records[asked:]) == []  # every verdict came from the cache


def test_an_empty_answer_is_decided_by_the_rubric_without_a_call(server: FakeOllama, tmp_path: Path) -> None:
    items = _dicts(2)
    items[1]["prediction"] = ""
    verdicts = judge_items_sync(items, [f"ollama:{MODEL}"], tmp_path / "c.sqlite", host=server.url, timeout=5)
    assert verdicts["q1"].verdict == "incorrect" and verdicts["q1"].votes[f"ollama:{MODEL}"]["status"] == "rule"


def test_a_judge_whose_replies_never_parse_leaves_items_unscored_never_wrong(
    server: FakeOllama, tmp_path: Path
) -> None:
    server.always("garbage")
    verdicts = judge_items_sync(
        _dicts(4), [f"ollama:{MODEL}"], tmp_path / "c.sqlite", host=server.url, timeout=5, retries=2
    )
    assert all(v.verdict is None for v in verdicts.values())
    assert all(v.reason for v in verdicts.values())


def _worker(url: str, cache: str, start: int, queue: multiprocessing.Queue) -> None:
    items = [item.to_json() for item in qa_items(12)][start : start + 8]
    verdicts = judge_items_sync(items, [f"ollama:{MODEL}"], cache, host=url, timeout=10)
    queue.put({k: v.verdict for k, v in verdicts.items()})


def test_two_processes_share_one_cache_without_wiping_each_other(tmp_path: Path) -> None:
    cache = tmp_path / "shared.sqlite"
    with FakeOllama(models=(MODEL,), slots=2, latency_s=0.02) as fake:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(fake.url, str(cache), start, queue)) for start in (0, 4)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    assert sorted(results[0]) != sorted(results[1])  # overlapping, different sets
    for result in results:
        assert all(v is not None for v in result.values()) and len(result) == 8
    with sqlite3.connect(cache) as db:
        keys = [row[0] for row in db.execute("SELECT key FROM judgements")]
    assert len(keys) == len(set(keys)) == 12  # every distinct request stored once, none lost


def test_a_judge_that_is_down_raises_instead_of_answering(tmp_path: Path) -> None:
    """Nothing listens on the port: the preflight fails, nothing is recorded as a verdict."""
    import pytest

    from grading.judges import JudgeError

    with FakeOllama(models=(MODEL,)) as fake:
        url = fake.url
    with pytest.raises(JudgeError):
        judge_items_sync(_dicts(2), [f"ollama:{MODEL}"], tmp_path / "c.sqlite", host=url, timeout=1, retries=1)
