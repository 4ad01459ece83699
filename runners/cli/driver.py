"""Run options and the generic run driver shared by every command that runs a pipeline."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from runners.chunks import Chunk, SelectionError
from runners.config import ConfigError, load_config
from runners.names import InvalidNameError
from runners.store import RunStoreError

# Exit status of a run that stopped at a barrier: nothing failed; a stage needs units that other chunks or workers
# have not recorded yet. 75 is EX_TEMPFAIL ("try again later") in sysexits.h.
EXIT_WAITING = 75


class UserError(click.ClickException):
    """An error the user can fix; printed without a traceback."""


# ---------------------------------------------------------------------------------------------------------------
# Shared options
# ---------------------------------------------------------------------------------------------------------------

profile_option = click.option(
    "--profile",
    default="auto",
    show_default=True,
    help="Platform profile: auto, cpu, t4, kaggle, l4, a100-40, a100-80, or a path to a YAML file.",
)
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable)."
)


def run_options(func):  # type: ignore[no-untyped-def]
    options = [
        click.option("--run-dir", type=str, default=None, help="Run directory (local path or fsspec URL)."),
        click.option(
            "--sync-to",
            default=None,
            metavar="URL",
            help="Push the run there after every unit, in the background (s3://, gs://, a mounted folder); "
            "remembered by the run directory. Default: run.sync_to.",
        ),
        profile_option,
        set_option,
        click.option("--chunk", default=None, metavar="K/N", help="Process only chunk K of N (1-based)."),
        click.option("--only", multiple=True, metavar="UNIT", help="Process only these unit ids (repeatable)."),
        click.option("--limit", type=int, default=None, help="Process only the first N units of each stage."),
        click.option(
            "--allow-config-change",
            is_flag=True,
            help="Resume a run directory although the config hash differs (the change is logged).",
        ),
        click.option("--progress/--no-progress", default=True, help="Show a progress bar per stage."),
        click.option(
            "--executor",
            type=click.Choice(["local", "ray"]),
            default=None,
            help="Where units run: this process (local) or Ray actors (ray). Default: run.executor (local).",
        ),
        click.option(
            "--ray-address",
            default=None,
            metavar="ADDRESS",
            help="Ray cluster to use (HOST:PORT or auto); implies --executor ray. Default: a local instance.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def load_cli_config(experiment: str | None, profile: str, overrides: tuple[str, ...]):  # type: ignore[no-untyped-def]
    from runners.platform import resolve_profile

    try:
        return load_config(experiment, resolve_profile(profile), overrides)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def _setup_logging(log_file: Path | None) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not any(isinstance(h, logging.StreamHandler) and h.stream is sys.stderr for h in root.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(logging.WARNING)
        console.setFormatter(fmt)
        root.addHandler(console)
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8", delay=True)  # no empty log for a quiet worker
        handler.setFormatter(fmt)
        root.addHandler(handler)


def silence_library_progress_bars() -> None:
    """`--no-progress` covers the libraries' bars too (transformers' "Loading weights", hub downloads): both read
    HF_HUB_DISABLE_PROGRESS_BARS when first imported, and are told directly if they already were."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def recorded_sync(location: str) -> str | None:
    """Where a local run directory synced to before (None: a URL run directory, or never synced)."""
    from runners.sync import SyncError, is_url, recorded_url

    if is_url(location):
        return None
    try:
        return recorded_url(Path(location.removeprefix("file://")).expanduser())
    except SyncError as exc:
        raise UserError(str(exc)) from None


def _first_error(store, summaries) -> str:  # type: ignore[no-untyped-def]
    """`: STAGE UNIT: reason` of one unit that failed in this session (the others' are in their journal lines)."""
    for s in summaries:
        if not s.by_status.get("error"):
            continue
        for unit, record in sorted(store.records(s.stage).items()):
            if record.status == "error" and record.reason:
                return f", e.g. {s.stage} {unit}: {record.reason.splitlines()[0][:400]}"
    return ""


def execute_run(
    experiment: str | None,
    *,
    run_dir: str | None,
    profile: str,
    overrides: tuple[str, ...],
    chunk: str | None,
    only: tuple[str, ...],
    limit: int | None,
    allow_config_change: bool,
    progress: bool,
    executor: str | None = None,
    ray_address: str | None = None,
    sync_to: str | None = None,
    command: str | None = None,
    pipelines: tuple[str, ...] = (),
) -> Path:
    """Load the config, open (or resume) the run directory and run the pipeline's stages for this worker.

    `command` (`seal ttt run`, …) runs only the experiments of its `pipelines`; `seal run` (none given) runs any.
    Exits with EXIT_WAITING (after one line saying what for) when a stage waits for units not recorded yet."""
    from runners.config import identity_changes, identity_hash
    from runners.pipelines import get_pipeline
    from runners.platform import default_runs_root
    from runners.stage import Selection, check_selection, run_pipeline
    from runners.store import RunStore

    if not progress:
        silence_library_progress_bars()
    if ray_address:  # the flags are config keys too (run.executor, run.ray_address); a flag wins over the files
        if executor == "local":
            raise UserError("--ray-address names a Ray cluster, but --executor local runs here: drop one of them")
        overrides = (*overrides, f"run.ray_address={ray_address}")
        executor = "ray"
    if executor:
        overrides = (*overrides, f"run.executor={executor}")
    if sync_to:
        overrides = (*overrides, f"run.sync_to={sync_to}")
    cfg = load_cli_config(experiment, profile, overrides)
    if pipelines and cfg.pipeline not in pipelines:
        name = cfg.experiment if experiment is None else experiment
        raise UserError(
            f"experiment {name!r} runs the {cfg.pipeline} pipeline, not `{command}`'s "
            f"({', '.join(pipelines)}): run it with `seal run {name}`"
        )
    try:
        selection = Selection(
            only=tuple(u for item in only for u in item.split(",") if u),
            limit=limit,
            chunk=Chunk.parse(chunk) if chunk else None,
        )
        pipeline = get_pipeline(cfg.pipeline)
    except (SelectionError, ValueError) as exc:
        raise UserError(str(exc)) from None
    location = run_dir or str(default_runs_root() / cfg.experiment)
    try:
        # Creates nothing yet: a refused command leaves no run directory behind. A run that synced before keeps
        # syncing to the same place (its .sync ledger says where).
        store = RunStore.open(location, sync_to=cfg.run.sync_to or recorded_sync(location))
    except RunStoreError as exc:
        raise UserError(str(exc)) from None
    _setup_logging(None)
    sections = getattr(pipeline, "CONFIG_SECTIONS", None)
    exclude = getattr(pipeline, "CONFIG_EXCLUDE", ())
    try:
        # Before the manifest is written: a config that cannot run must not become the run's recorded config.
        stages = pipeline.stages(cfg, store)
        data = pipeline.data_identity(cfg) if hasattr(pipeline, "data_identity") else None
        # --only names of the stages known now; names of stages computed later are checked when they start.
        check_selection(store, stages, selection)
    except (ConfigError, InvalidNameError, SelectionError, RunStoreError) as exc:
        store.close()
        raise UserError(str(exc)) from None
    from runners.memory_check import check_before_start

    refused = check_before_start(cfg)  # before the manifest: a plan that cannot fit must not become the run's
    if refused is None and hasattr(pipeline, "preflight"):
        refused = pipeline.preflight(cfg, store, stages)  # a service the stages need (a judge) answers
    if refused is not None:
        store.close()
        raise UserError(refused)
    run_hash = identity_hash(cfg, sections, exclude)
    try:
        store.start(
            cfg.to_dict(),
            run_hash,
            allow_config_change=allow_config_change,
            session={"chunk": chunk, "only": list(selection.only), "limit": limit, "profile": cfg.profile},
            data_identity=data,
            config_changes=lambda stored: identity_changes(stored, cfg, sections, exclude),
        )
    except RunStoreError as exc:
        raise UserError(str(exc)) from None
    _setup_logging(store.logs_dir() / f"worker-{os.getpid()}.log")
    from ttt import memory

    memory.configure_log(store.logs_dir() / f"memory-{os.getpid()}.jsonl")  # one line per training step
    click.echo(f"run directory: {store.root}  (config {run_hash}, profile {cfg.profile})", err=True)
    ray_session = make_executor = None
    if cfg.run.executor == "ray":
        from runners.ray_executor import RaySession

        try:
            ray_session = RaySession(cfg.run.ray_address)
        except (RuntimeError, ConnectionError) as exc:
            store.close()
            raise UserError(str(exc)) from None
        make_executor = ray_session.make_executor(cfg, store.root.resolve())
    try:
        summaries = run_pipeline(
            store,
            stages,
            selection,
            claim_timeout_s=cfg.run.claim_timeout_s,
            progress=progress,
            config_hash=run_hash,
            oom_retries=cfg.run.oom_retries,
            make_executor=make_executor,
        )
    except (SelectionError, InvalidNameError, RunStoreError) as exc:
        logging.getLogger("seal.run").error("stopped: %s", exc)
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C: what was recorded stays; only the unit in flight is redone
        logging.getLogger("seal.run").warning("interrupted")
        click.echo(
            f"interrupted: every recorded unit is kept in {store.root}; run the same command again to continue",
            err=True,
        )
        raise click.exceptions.Exit(130) from None
    except Exception:
        logging.getLogger("seal.run").exception("stopped by an unexpected error")  # the traceback, in the run's log
        raise
    finally:
        if ray_session is not None:
            ray_session.close()
        store.sync()
        store.close(cfg.run.sync_wait_s)
    for s in summaries:
        if s.waiting is not None:
            continue
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(s.by_status.items())) or "nothing new"
        click.echo(
            f"stage {s.stage}: {s.selected} selected, {s.already_done} already recorded, processed {s.processed} "
            f"({statuses})" + (f", {len(s.held_elsewhere)} held by other workers" if s.held_elsewhere else ""),
            err=True,
        )
        outcome = pipeline.stage_outcome(cfg, store, s.stage) if hasattr(pipeline, "stage_outcome") else None
        if outcome:
            click.echo(f"  → {outcome}", err=True)
    if all(s.complete for s in summaries) and len(summaries) == len(stages):
        click.echo(pipeline.summarize(cfg, store))
    errors = sum(s.by_status.get("error", 0) for s in summaries)
    if errors:
        raise UserError(
            f"{errors} unit(s) failed with errors{_first_error(store, summaries)} (see {store.root}/logs); run "
            "again to retry them"
        )
    waiting = next((s.waiting for s in summaries if s.waiting is not None), None)
    if waiting is not None:
        click.echo(waiting.message(), err=True)
        raise click.exceptions.Exit(EXIT_WAITING)
    return store.root
