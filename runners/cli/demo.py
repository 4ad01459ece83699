"""`seal demo`: the main job on the embedded default model, on a CPU, in a few minutes."""

from __future__ import annotations

import click

from runners.cli.driver import execute_run, run_options

DEMOS = {
    "arc": ("demo", "runs/demo"),  # one SEAL iteration on ARC (the main job)
    "ttt": ("demo_ttt", "runs/demo-ttt"),  # oracle TTT only
}


@click.command("demo")
@click.argument("which", type=click.Choice(sorted(DEMOS)), default="arc")
@run_options
def demo(which: str, **kwargs: object) -> None:
    """The main job on SmolLM2-135M-Instruct (the embedded model), on a CPU.

    \b
    arc (default): one SEAL iteration on two small ARC tasks x 2 self-edits: sampled from the model, each applied
                   with LoRA TTT and rewarded, the rewarded ones behaviour-cloned (or the model carried forward),
                   and the new model's self-edits evaluated. Prints each stage's outcome and the report.
    ttt:           oracle TTT on the same tasks (one fixed recipe, no self-edits).

    Run it again to resume or to see the report.
    """
    experiment, run_dir = DEMOS[which]
    if not kwargs.get("run_dir"):
        kwargs["run_dir"] = run_dir
    execute_run(experiment, **kwargs)  # type: ignore[arg-type]
