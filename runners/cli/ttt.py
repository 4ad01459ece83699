"""`seal ttt …`: ARC test-time training pipelines."""

from __future__ import annotations

import click

from runners.cli.driver import execute_run, run_options


@click.group("ttt")
def ttt() -> None:
    """ARC test-time training (per-task LoRA, augmented inference, voting, pass@2)."""


@ttt.command("run")
@click.argument("experiment", default="arc_ttt_oracle")
@run_options
def ttt_run(experiment: str, **kwargs: object) -> None:
    """Oracle TTT: one fixed recipe (default: SEAL's) applied to every task of the configured subset.

    EXPERIMENT defaults to configs/experiments/arc_ttt_oracle.yaml; each task is one resumable unit.
    """
    execute_run(experiment, command="seal ttt run", pipelines=("arc_ttt",), **kwargs)  # type: ignore[arg-type]
