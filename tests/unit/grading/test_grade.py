"""The grading loop: cache as resume journal, panels, rules, variance sample, other back-ends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from grading.bundle import Item
from grading.judges import FatalJudgeError, JudgeRequest, make_judge, parse_judge_spec
from grading.report import panel_verdict
from grading.rubrics import CORRECT, INCORRECT, NOT_ATTEMPTED, get_rubric
from tests.fixtures.ollama_server import FakeOllama
from tests.unit.grading.conftest import MODEL, qa_items, run_grade, settings, vote


def test_grading_again_is_answered_from_the_cache_and_rescore_asks_again(server: FakeOllama, tmp_path: Path) -> None:
    items = qa_items(12)
    first, records = run_grade(server.url, items, tmp_path / "c.sqlite")
    assert (first.sent, first.cached, first.stored) == (12, 0, 12)
    second, again = run_grade(server.url, items, tmp_path / "c.sqlite")
    assert (second.sent, second.cached) == (0, 12)
    assert again == records
    third, _ = run_grade(server.url, items, tmp_path / "c.sqlite", rescore=True)
    assert third.sent == 12


def test_the_cache_key_follows_the_model_digest_and_the_rubric(tmp_path: Path) -> None:
    items = qa_items(4)
    with FakeOllama(digest="sha256:" + "1" * 64) as server:
        run_grade(server.url, items, tmp_path / "c.sqlite")
    with FakeOllama(digest="sha256:" + "2" * 64) as server:  # the model was re-pulled: new weights
        outcome, _ = run_grade(server.url, items, tmp_path / "c.sqlite")
        assert outcome.sent == 4
        outcome, _ = run_grade(server.url, items, tmp_path / "c.sqlite", rubric=get_rubric("three-way"))
        assert outcome.sent == 4


def test_empty_answers_are_decided_by_the_rule_without_a_call(server: FakeOllama, tmp_path: Path) -> None:
    items = [Item("e", "qa", "q?", ("gold",), "   ", {}), Item("f", "qa", "q?", ("gold",), "gold", {})]
    outcome, records = run_grade(server.url, items, tmp_path / "c.sqlite")
    assert outcome.sent == 1
    assert vote(records[0]) == {
        "status": "rule",
        "verdict": INCORRECT,
        "reason": "empty answer: decided without a call",
    }
    _, records = run_grade(server.url, items, tmp_path / "d.sqlite", rubric=get_rubric("three-way"))
    assert vote(records[0])["verdict"] == NOT_ATTEMPTED


def test_identical_requests_are_sent_once(server: FakeOllama, tmp_path: Path) -> None:
    twin = [Item(f"t{i}", "qa", "Same?", ("yes",), "yes", {"copy": i}) for i in range(3)]
    outcome, records = run_grade(server.url, twin, tmp_path / "c.sqlite")
    assert outcome.sent == 1
    assert [vote(r)["verdict"] for r in records] == [CORRECT] * 3


def test_arc_items_get_metrics_and_no_judge_call(server: FakeOllama, tmp_path: Path) -> None:
    arc = Item("a/0", "arc", "", (((1,),),), attempts=("1", "x"), task_id="a")
    outcome, records = run_grade(server.url, [arc], tmp_path / "c.sqlite")
    assert outcome.sent == 0
    assert records[0]["metrics"]["pass@1"] == 1.0 and "judges" not in records[0]


def test_arc_only_input_needs_no_reachable_judge(tmp_path: Path) -> None:
    with FakeOllama() as server:
        url = server.url  # the server is gone once the block ends: nothing answers on this port any more
    arc = Item("a/0", "arc", "", (((1,),),), attempts=("x", "1"), task_id="a")
    outcome, records = run_grade(url, [arc], tmp_path / "c.sqlite")
    assert (outcome.sent, outcome.infos) == (0, [])
    assert records[0]["metrics"] == {"pass@1": 0.0, "pass@2": 1.0, "attempts": 2.0, "unparseable_attempts": 1.0}


def test_a_panel_keeps_each_verdict_and_the_majority_decides(server: FakeOllama, tmp_path: Path) -> None:
    judges = (f"ollama:{MODEL}", "ollama:other:1b", "ollama:contrarian:1b")
    outcome, records = run_grade(server.url, qa_items(6), tmp_path / "c.sqlite", judges=judges)
    assert outcome.sent == 18
    for record in records:
        fair = record["judges"][f"ollama:{MODEL}"]["verdict"]
        assert record["judges"]["ollama:contrarian:1b"]["verdict"] != fair
        assert record["panel"] == fair  # two fair judges outvote the contrarian


def test_a_three_way_split_goes_to_disagree_not_to_the_first_judge(server: FakeOllama, tmp_path: Path) -> None:
    judges = (f"ollama:{MODEL}", "ollama:contrarian:1b", "ollama:abstainer:1b")
    _, records = run_grade(
        server.url, qa_items(3), tmp_path / "c.sqlite", judges=judges, rubric=get_rubric("three-way")
    )
    assert [r["panel"] for r in records] == ["disagree"] * 3


def test_panel_rules() -> None:
    yes = {"status": "scored", "verdict": CORRECT}
    no = {"status": "scored", "verdict": INCORRECT}
    lost = {"status": "failed", "verdict": None}
    assert panel_verdict([yes]) == CORRECT
    assert panel_verdict([yes, yes, no]) == CORRECT
    assert panel_verdict([yes, yes, lost]) == CORRECT  # a majority of the panel, even with a vote missing
    assert panel_verdict([yes, no, lost]) == "unscored"  # the missing vote would have decided
    assert panel_verdict([lost]) == "unscored"
    assert panel_verdict([yes, no, {"status": "scored", "verdict": NOT_ATTEMPTED}]) == "disagree"


def test_panel_must_be_odd_and_distinct(server: FakeOllama, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="odd number of judges"):
        run_grade(server.url, qa_items(1), tmp_path / "c.sqlite", judges=(f"ollama:{MODEL}", "ollama:other:1b"))
    with pytest.raises(ValueError, match="appears twice"):
        run_grade(
            server.url,
            qa_items(1),
            tmp_path / "c.sqlite",
            judges=(f"ollama:{MODEL}", f"ollama:{MODEL}", "ollama:other:1b"),
        )


def test_variance_sample_rejudges_with_another_seed(server: FakeOllama, tmp_path: Path) -> None:
    outcome, records = run_grade(server.url, qa_items(10), tmp_path / "c.sqlite", variance_sample=4)
    assert outcome.sent == 14
    seeds = sorted(r.body["options"]["seed"] for r in server.chat_records())
    assert seeds == [7] * 10 + [8] * 4
    sampled = [r for r in records if "variance" in r]
    assert len(sampled) == 4
    assert all(r["variance"][f"ollama:{MODEL}"]["verdict"] == vote(r)["verdict"] for r in sampled)


def test_seal_strict_sends_no_schema_and_applies_the_published_rule(server: FakeOllama, tmp_path: Path) -> None:
    _, records = run_grade(server.url, qa_items(3), tmp_path / "c.sqlite", mode="strict")
    body = server.chat_records()[0].body
    assert "format" not in body
    assert body["messages"][0]["content"].endswith("Reply only yes or no.")
    assert [vote(r)["raw"] for r in records] == ["No.", "Yes.", "Yes."]
    assert [vote(r)["verdict"] for r in records] == [INCORRECT, CORRECT, CORRECT]
    with pytest.raises(ValueError, match="SEAL-strict needs seal-yesno"):
        settings(mode="strict", rubric=get_rubric("three-way"))


def test_judge_specs() -> None:
    assert parse_judge_spec("ollama:llama3.2:1b") == ("ollama", "llama3.2:1b")
    assert parse_judge_spec("openai-compat:http://h:8000/v1#m") == ("openai-compat", "http://h:8000/v1#m")
    assert parse_judge_spec("hf:/models/x") == ("hf", "/models/x")
    with pytest.raises(ValueError, match="openai-compat:<base_url>#<model>"):
        parse_judge_spec("openai-compat:http://h:8000/v1")
    with pytest.raises(ValueError, match="names no model"):
        parse_judge_spec("hf:")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("olama:x", "unknown scheme olama:; the schemes are ollama:, openai-compat:, hf:"),
        ("foo:bar:baz", "unknown scheme foo:; the schemes are ollama:, openai-compat:, hf:"),
        ("llama3.2:1b", "(an Ollama model? write ollama:llama3.2:1b)"),
        ("llama3", "unknown scheme (none) (an Ollama model? write ollama:llama3)"),
        ("", "empty judge spec"),
    ],
)
def test_unknown_judge_schemes_are_refused_with_the_valid_ones(spec: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_judge_spec(spec)
    assert says in str(caught.value)
    assert "ollama pull" not in str(caught.value)


def test_openai_compatible_judge_against_the_v1_routes(server: FakeOllama, tmp_path: Path) -> None:
    spec = f"openai-compat:{server.url}/v1#{MODEL}"
    outcome, records = run_grade(server.url, qa_items(3), tmp_path / "c.sqlite", judges=(spec,))
    assert [vote(r, spec)["verdict"] for r in records] == [INCORRECT, CORRECT, CORRECT]
    body = server.chat_records()[0].body
    assert body["max_tokens"] == 48 and body["seed"] == 7 and body["temperature"] == 0
    assert body["response_format"]["type"] == "json_schema"
    info = outcome.infos[0]
    assert info.server_version != "unknown" and info.digest == f"served:{MODEL}"
    missing = make_judge(f"openai-compat:{server.url}/v1#absent")
    with pytest.raises(FatalJudgeError, match="not served"):
        asyncio.run(missing.preflight({}))


def test_openai_compatible_judge_faults(server: FakeOllama, tmp_path: Path) -> None:
    spec = f"openai-compat:{server.url}/v1#{MODEL}"
    server.inject("503")
    server.inject("length")
    _, records = run_grade(server.url, qa_items(2), tmp_path / "c.sqlite", judges=(spec,))
    assert [vote(r, spec)["status"] for r in records] == ["truncated", "scored"]


def _llama_cpp_python_like(seen: list[dict[str, Any]], *, title: str) -> httpx.MockTransport:
    """The routes of llama-cpp-python's server that the judge uses; it refuses ``json_schema`` with a 500."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "smol", "object": "model"}]})
        if path == "/openapi.json":
            return httpx.Response(200, json={"info": {"title": title, "version": "0.3.36"}})
        if path == "/v1/chat/completions":
            body = json.loads(request.content)
            seen.append(body)
            if body["response_format"]["type"] != "json_object":
                return httpx.Response(500, json={"error": {"message": "response_format.type: Input should be ..."}})
            assert body["response_format"]["schema"]["properties"]["verdict"]["enum"]
            reply = {"message": {"content": '{"verdict": "yes"}'}, "finish_reason": "stop"}
            return httpx.Response(200, json={"choices": [reply], "usage": {"prompt_tokens": 9}})
        return httpx.Response(404, json={"detail": "Not Found"})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("title", ["🦙 llama.cpp Python API", "some other server"])
def test_openai_compatible_judge_sends_json_object_to_llama_cpp_python(title: str) -> None:
    from grading.judges.openai_compat import OpenAICompatJudge

    seen: list[dict[str, Any]] = []
    judge = OpenAICompatJudge("http://127.0.0.1:1/v1", "smol")
    judge._client = httpx.AsyncClient(base_url=judge.base_url, transport=_llama_cpp_python_like(seen, title=title))
    rubric = get_rubric("seal-yesno")
    request = JudgeRequest(messages=[{"role": "user", "content": "q"}], schema=rubric.schema("structured"), options={})

    async def go() -> tuple[Any, Any, Any]:
        info = await judge.preflight({})
        first, second = await judge.complete(request), await judge.complete(request)
        await judge.aclose()
        return info, first, second

    info, first, second = asyncio.run(go())
    assert first.text == second.text == '{"verdict": "yes"}'
    if "llama.cpp" in title:  # recognised at the preflight: no refused request at all
        assert info.server_version == "llama-cpp-python 0.3.36"
        assert [b["response_format"]["type"] for b in seen] == ["json_object", "json_object"]
    else:  # one refusal naming response_format, then the json_object form for good
        assert info.server_version == "some other server 0.3.36"
        assert [b["response_format"]["type"] for b in seen] == ["json_schema", "json_object", "json_object"]
