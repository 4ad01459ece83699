"""The transformers back-end, on tiny random models built here (no hub): it runs, and garbage is unscored."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.unit.grading.conftest import qa_items, run_grade, vote


def _tiny_chat_model(folder: Path, *, silent: bool) -> Path:
    """A 1-layer Llama. ``silent``: end-of-turn is token 0 and the final norm is zeroed, so every logit is 0 and
    greedy decoding ends at once with an empty reply; otherwise it rambles until ``num_predict``."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [
        "<eos>",
        "<unk>",
        "<pad>",
        "system",
        "user",
        "assistant",
        ":",
        "question",
        "answer",
        "gold",
        "yes",
        "no",
        "verdict",
        "{",
        "}",
        '"',
        ",",
        "is",
    ]
    if not silent:
        words[0], words[1] = words[1], words[0]
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} <eos> {% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["<eos>"],
    )
    model = transformers.LlamaForCausalLM(config)
    if silent:
        with torch.no_grad():
            model.model.norm.weight.zero_()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_hf_judge_truncated_replies_are_unscored(tmp_path: Path) -> None:
    spec = f"hf:{_tiny_chat_model(tmp_path / 'rambler', silent=False)}"
    outcome, records = run_grade("unused", qa_items(2), tmp_path / "c.sqlite", judges=(spec,), num_predict=4)
    assert outcome.sent == 2  # a truncated reply is not re-asked
    assert [vote(r, spec)["status"] for r in records] == ["truncated", "truncated"]
    assert all(r["panel"] == "unscored" for r in records)
    info = outcome.infos[0]
    assert info.digest.startswith("sha256:") and info.context_length == 2048
    assert "torch" in sys.modules  # imported for this back-end only (the no-torch CLI test checks the rest)


def test_hf_judge_unparseable_replies_are_re_asked_then_unscored(tmp_path: Path) -> None:
    spec = f"hf:{_tiny_chat_model(tmp_path / 'silent', silent=True)}"
    outcome, records = run_grade("unused", qa_items(2), tmp_path / "c.sqlite", judges=(spec,))
    assert outcome.sent == 6  # 1 + 2 retries each
    assert [vote(r, spec)["status"] for r in records] == ["unparseable", "unparseable"]
    assert all(vote(r, spec)["raw"] == "" for r in records)


def test_hf_judge_generation_that_outlives_the_timeout_is_a_failure_not_a_verdict(tmp_path: Path) -> None:
    spec = f"hf:{_tiny_chat_model(tmp_path / 'rambler', silent=False)}"
    outcome, records = run_grade(
        "unused",
        qa_items(1),
        tmp_path / "c.sqlite",
        judges=(spec,),
        timeout=1e-5,
        num_predict=1500,
        max_attempts=2,
        backoff_s=0.0,
    )
    assert outcome.failed == 1 and outcome.stored == 0
    record = vote(records[0], spec)
    assert record["status"] == "failed" and "timeout" in record["reason"]
    assert records[0]["panel"] == "unscored"
