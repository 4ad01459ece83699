"""`seal knowledge …`: SEAL on knowledge incorporation from passages."""

from __future__ import annotations

import click

from runners.cli.driver import execute_run, run_options


@click.group("knowledge")
def knowledge() -> None:
    """Knowledge incorporation: the model writes implications of a passage, is updated with a LoRA on them, and is
    rewarded by the questions about the passage it then answers without seeing it (ReST-EM on the best ones)."""


@knowledge.command("rl")
@click.argument("experiment", default="knowledge_seal")
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=None,
    help="RL iterations to reach (seal.iterations). Raising it on a finished run continues that run.",
)
@run_options
def knowledge_rl(experiment: str, iterations: int | None, **kwargs: object) -> None:
    """Run (or resume) the SEAL loop of EXPERIMENT (default configs/experiments/knowledge_seal.yaml).

    With judge.spec deferred, a reward stage exits with status 75 ("waiting") until the exported answers are graded
    elsewhere (`seal grade BUNDLE --judge …`) and imported (`seal grade import RUN_DIR GRADES_DIR`)."""
    if iterations is not None:
        kwargs["overrides"] = (*kwargs.get("overrides", ()), f"seal.iterations={iterations}")  # type: ignore[misc]
    execute_run(experiment, command="seal knowledge rl", pipelines=("knowledge_seal",), **kwargs)  # type: ignore[arg-type]


@knowledge.command("cpt")
@click.argument("experiment", default="knowledge_cpt")
@run_options
def knowledge_cpt(experiment: str, **kwargs: object) -> None:
    """Continued pretraining: the self-edits of N passages in one LoRA update, then every question answered
    (default configs/experiments/knowledge_cpt.yaml). Resumable per phase."""
    execute_run(experiment, command="seal knowledge cpt", pipelines=("knowledge_cpt",), **kwargs)  # type: ignore[arg-type]


@knowledge.command("continual")
@click.argument("experiment", default="knowledge_continual")
@run_options
def knowledge_continual(experiment: str, **kwargs: object) -> None:
    """Continual self-edits: K passages in sequence, each update folded into the weights, every passage seen so
    far re-asked; writes the (K+1)xK matrix as JSON and a heatmap PNG (default knowledge_continual.yaml)."""
    execute_run(experiment, command="seal knowledge continual", pipelines=("knowledge_continual",), **kwargs)  # type: ignore[arg-type]
