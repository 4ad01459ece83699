"""`seal arc …`: the SEAL loop on ARC."""

from __future__ import annotations

import click

from runners.cli.driver import execute_run, run_options


@click.group("arc")
def arc() -> None:
    """SEAL on ARC: self-edits (JSON training recipes) written by the model, applied with LoRA TTT, rewarded when
    they solve their task, behaviour-cloned (ReST-EM)."""


@arc.command("rl")
@click.argument("experiment", default="arc_seal")
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=None,
    help="RL iterations to reach (seal.iterations). Raising it on a finished run continues that run.",
)
@run_options
def arc_rl(experiment: str, iterations: int | None, **kwargs: object) -> None:
    """Run (or resume) the SEAL RL loop of EXPERIMENT (default configs/experiments/arc_seal.yaml).

    Iteration i samples self-edits from iteration i-1's merged model (iteration 0: model.spec). Every stage is
    resumable; a stage whose inputs other chunks still have to record exits with status 75 ("waiting")."""
    if iterations is not None:
        kwargs["overrides"] = (*kwargs.get("overrides", ()), f"seal.iterations={iterations}")  # type: ignore[misc]
    execute_run(experiment, command="seal arc rl", pipelines=("arc_seal",), **kwargs)  # type: ignore[arg-type]
