"""`seal demo`: the main job on the embedded default model, on a CPU, in a few minutes."""

from __future__ import annotations

import click

from runners.cli.driver import execute_run, run_options

DEMOS = {  # experiment, run folder under the platform's runs root (runs/ here, Drive on Colab, SEAL_RUNS)
    "knowledge": ("demo", "demo"),  # one SEAL iteration of knowledge incorporation (the main job)
    "arc": ("demo_arc", "demo-arc"),  # one SEAL iteration on ARC
    "ttt": ("demo_ttt", "demo-ttt"),  # oracle TTT on ARC only
}


@click.command("demo")
@click.argument("which", type=click.Choice(sorted(DEMOS)), default="knowledge")
@run_options
def demo(which: str, **kwargs: object) -> None:
    """The main job on SmolLM2-135M-Instruct (the embedded model), on a CPU.

    \b
    knowledge (default): one SEAL iteration on 2 short passages x 2 self-edits: implications written by the model,
                   each applied with a LoRA and rewarded by the questions the model then answers without the
                   passage (gold-answer NLL; contains and F1 reported), the best per passage behaviour-cloned and
                   merged, and the new model's self-edits evaluated. Prints each stage's outcome and the report.
    arc:           one SEAL iteration on two small ARC tasks x 2 self-edits (JSON training recipes).
    ttt:           oracle TTT on the same ARC tasks (one fixed recipe, no self-edits).

    Run it again to resume or to see the report.
    """
    from runners.platform import default_runs_root

    experiment, folder = DEMOS[which]
    if not kwargs.get("run_dir"):
        kwargs["run_dir"] = str(default_runs_root() / folder)
    execute_run(experiment, **kwargs)  # type: ignore[arg-type]
