"""Each pipeline command runs only its own pipeline's experiments: `seal knowledge cpt demo` used to run the
knowledge SEAL loop and `seal ttt run selftest` the selftest, whatever the command said. `seal run` runs any."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from runners.cli import main


@pytest.mark.parametrize(
    ("command", "experiment", "pipeline"),
    [
        (["ttt", "run"], "selftest", "selftest"),
        (["ttt", "run"], "demo_arc", "arc_seal"),
        (["arc", "rl"], "demo", "knowledge_seal"),
        (["knowledge", "rl"], "demo_ttt", "arc_ttt"),
        (["knowledge", "cpt"], "demo", "knowledge_seal"),
        (["knowledge", "continual"], "knowledge_cpt", "knowledge_cpt"),
    ],
)
def test_a_command_refuses_another_pipelines_experiment_before_writing(
    command: list[str], experiment: str, pipeline: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, [*command, experiment, "--run-dir", str(run_dir), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"runs the {pipeline} pipeline, not `seal {' '.join(command)}`'s" in result.output
    assert f"`seal run {experiment}`" in result.output
    assert not run_dir.exists()


def test_seal_run_runs_any_pipeline(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", "selftest", "--run-dir", str(run_dir), "--no-progress", "--set", "selftest.units=2",
               "--set", "selftest.iterations=10"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (run_dir / "manifest.json").is_file()
