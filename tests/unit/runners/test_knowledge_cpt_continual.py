"""`seal knowledge cpt` and `seal knowledge continual` with the tiny model on the project's passages."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from runners.cli import main
from runners.store import RunStore

SMALL = ["--profile", "cpu", "--no-progress", "--set", "model.spec=tiny", "--set", "knowledge.source=data/knowledge",
         "--set", "knowledge.shuffle_seed=null", "--set", "seal.max_new_tokens=24", "--set", "judge.spec=null",
         "--set", "knowledge.answer_max_new_tokens=6"]  # fmt: skip


def test_cpt_trains_one_update_on_every_passage_then_answers_each(tmp_path: Path) -> None:
    run_dir = tmp_path / "cpt"
    args = ["knowledge", "cpt", "--run-dir", str(run_dir), *SMALL, "--set", "cpt.passages=[0, 3]",
            "--set", "cpt.self_edits=2", "--set", "cpt.train.epochs=1"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    store = RunStore(run_dir)
    update = store.records("cpt.train")["update"]
    samples = store.records("cpt.sample")
    usable = sum(1 for r in samples.values() for i in r.result["slots"] if r.result["attempts"][i]["accepted"])
    assert update.result["self_edits_used"] == usable and update.result["passages"] == 3
    assert update.result["steps"] == -(-update.result["sequences"] // (4 * 2))  # batch 4 x accumulation 2, 1 epoch
    assert (run_dir / update.artifacts["adapter"] / "adapter_model.safetensors").exists()
    answers = store.records("cpt.answer")
    assert sorted(answers) == ["p0000", "p0001", "p0002"]
    base = store.records("cpt.base")
    changed = [answers[p].result["evaluation"]["scores"]["nll"] != base[p].result["evaluation"]["scores"]["nll"]
               for p in answers]  # fmt: skip
    assert all(changed)  # the one update moved every passage's gold NLL
    assert "CPT: one update on every passage" in (run_dir / "report" / "knowledge_cpt.md").read_text()
    exported = CliRunner().invoke(main, ["export", str(run_dir)])
    assert exported.exit_code == 0 and "24 items" in exported.output, exported.output  # 3 passages x 4 x 2 stages
    lines = (run_dir / "export" / "bundle.jsonl").read_text().splitlines()
    run_id = json.loads((run_dir / "manifest.json").read_text())["run_id"]  # not the folder's name
    assert json.loads(lines[0])["provenance"]["run_id"] == run_id
    assert {json.loads(line)["provenance"]["run_id"] for line in lines[1:]} == {run_id}


def test_continual_folds_each_update_and_writes_the_matrix_as_json_and_a_heatmap(tmp_path: Path) -> None:
    run_dir = tmp_path / "continual"
    args = ["knowledge", "continual", "--run-dir", str(run_dir), *SMALL, "--set", "continual.passages_per_sequence=3",
            "--set", "continual.sequences=2", "--set", "knowledge.train.epochs=1"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = RunStore(run_dir).records("continual")
    assert sorted(records) == [f"s{r}.{j}" for r in range(2) for j in range(4)]
    assert records["s1.0"].result["passages"] == ["p0003", "p0004", "p0005"]
    assert set(records["s0.0"].result["accuracy"]) == {"p0000", "p0001", "p0002"}  # row 0: every passage
    assert set(records["s0.2"].result["accuracy"]) == {"p0000", "p0001"}  # row j: the passages seen so far
    assert records["s0.1"].artifacts["adapter"] == "artifacts/continual/s0.1/adapter"
    nll_before = records["s0.0"].result["scores"]["p0000"]["nll"]
    assert records["s0.1"].result["scores"]["p0000"]["nll"] != nll_before  # the fold changed the weights
    matrix = json.loads((run_dir / "report" / "continual_matrix.json").read_text())
    assert (matrix["rows"], matrix["columns"], matrix["sequences"]) == (4, 3, [0, 1])
    assert matrix["count"] == [[2, 2, 2], [2, 0, 0], [2, 2, 0], [2, 2, 2]]
    exported = CliRunner().invoke(main, ["export", str(run_dir)])
    assert exported.exit_code == 0 and f"{2 * (3 + 1 + 2 + 3) * 4} items" in exported.output, exported.output
    png = (run_dir / "report" / "continual_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
