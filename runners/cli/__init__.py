"""The `seal` command line. Heavy modules (torch, transformers …) are imported inside commands, never here."""

from __future__ import annotations

from pathlib import Path

import click

from runners.cli.driver import execute_run, load_cli_config, profile_option, run_options, set_option
from runners.config import to_yaml
from ttt.memory import configure_allocator

configure_allocator()  # CUDA allocator settings must be in the environment before torch is first imported


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="seal-harness", prog_name="seal")
def main() -> None:
    """SEAL-style self-adapting language models: self-edits, LoRA test-time training, ReST-EM, offline grading.

    Runs are chunked and resumable: kill a command at any moment and run it again to continue.
    """


# ---------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------


@main.command("run")
@click.argument("experiment")
@run_options
def run_cmd(experiment: str, **kwargs: object) -> None:
    """Run (or resume) EXPERIMENT from configs/experiments/ (or a YAML path)."""
    execute_run(experiment, **kwargs)  # type: ignore[arg-type]


@main.command("selftest")
@run_options
def selftest_cmd(**kwargs: object) -> None:
    """Exercise the run store, chunks and claims with cheap real units (no model)."""
    execute_run("selftest", **kwargs)  # type: ignore[arg-type]


@main.group("config")
def config_group() -> None:
    """Inspect configurations."""


@config_group.command("show")
@click.argument("experiment")
@profile_option
@set_option
def config_show(experiment: str, profile: str, overrides: tuple[str, ...]) -> None:
    """Print the merged, validated config of EXPERIMENT, its hash, and the run hash a run of it records (over the
    keys its pipeline reads: a resume whose run hash differs is refused)."""
    from runners.config import identity_hash
    from runners.pipelines import get_pipeline

    cfg = load_cli_config(experiment, profile, overrides)
    click.echo(f"# config hash: {cfg.hash()}")
    try:
        pipeline = get_pipeline(cfg.pipeline)
    except ValueError:
        pipeline = None  # an unknown pipeline: `seal run` names the error
    if pipeline is not None:
        sections = getattr(pipeline, "CONFIG_SECTIONS", None)
        run_hash = identity_hash(cfg, sections, getattr(pipeline, "CONFIG_EXCLUDE", ()))
        click.echo(f"# run hash (what manifest.json's config_hash and a resume compare): {run_hash}")
    click.echo(to_yaml(cfg), nl=False)


@main.command("report")
@click.argument("run_dir")
@click.option("--out", default=None, type=click.Path(file_okay=False, path_type=Path), help="Default: RUN_DIR/report.")
@click.option("--watch", type=click.FloatRange(min=1.0), default=None, metavar="SECONDS",
              help="Rebuild every SECONDS while the run goes on (Ctrl-C stops).")  # fmt: skip
def report_cmd(run_dir: str, out: Path | None, watch: float | None) -> None:
    """Markdown, PNG plots and one self-contained HTML page of RUN_DIR (conditions with intervals, rewards, task x
    self-edit heatmap, losses, memory over time, forgetting)."""
    import time

    from runners.cli.driver import UserError
    from runners.run_report import build_report
    from runners.store import RunStoreError

    while True:
        try:
            built = build_report(run_dir, out)
        except (ValueError, RunStoreError) as exc:
            raise UserError(str(exc)) from None
        figures = built["figures"]
        listed = f"{len(figures)} figure{'' if len(figures) == 1 else 's'}: {', '.join(figures)}" if figures else ""
        click.echo(f"{built['folder']}/{built['html']} ({listed or 'no figures: the run has nothing to plot yet'})")
        if watch is None:
            return
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return


@main.command("plan")
@click.argument("experiment")
@profile_option
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_cmd(experiment: str, profile: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Predicted peak memory of each phase of EXPERIMENT (training, inference, sampling, SFT) against the budget of
    the profile's GPU or this machine, and the smallest change that fits when it does not. Exit 1: it does not fit."""
    import json

    from runners.cli.driver import UserError
    from runners.memory_check import describe, plan

    cfg = load_cli_config(experiment, profile, overrides)
    try:
        result = plan(cfg)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if result is None:
        click.echo(f"pipeline {cfg.pipeline} loads no model: nothing to plan")
        return
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else f"{cfg.model.spec}, profile {cfg.profile}\n"
               + describe(result))  # fmt: skip
    if not result.fits:
        raise click.exceptions.Exit(1)


@main.command("doctor")
@click.option("--ollama-host", default=None, help="Ollama host to probe (default: $OLLAMA_HOST or 127.0.0.1:11434).")
def doctor_cmd(ollama_host: str | None) -> None:
    """Print platform, chosen profile, package versions, disk, Ollama reachability and model cache state."""
    from runners.doctor import doctor_report

    click.echo(doctor_report(ollama_host))


# Commands kept in their own modules; each imports only click and light modules at the top.
from runners.cli.arc import arc  # noqa: E402
from runners.cli.demo import demo  # noqa: E402
from runners.cli.export import export  # noqa: E402
from runners.cli.grade import grade  # noqa: E402
from runners.cli.knowledge import knowledge  # noqa: E402
from runners.cli.sync import pull, push  # noqa: E402
from runners.cli.ttt import ttt  # noqa: E402

for _command in (arc, demo, export, grade, knowledge, pull, push, ttt):
    main.add_command(_command)
