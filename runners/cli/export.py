"""`seal export RUN_DIR`: a self-describing bundle of a run's outputs, for `seal grade` on another machine."""

from __future__ import annotations

from pathlib import Path

import click

from runners.cli.driver import UserError

BUNDLE_NAME = "bundle.jsonl"


@click.command("export")
@click.argument("run_dir")
@click.option(
    "--out",
    "out",
    default=None,
    help=f"Bundle path; an existing directory gets DIR/{BUNDLE_NAME} (default: RUN_DIR/export/{BUNDLE_NAME}).",
)
def export(run_dir: str, out: str | None) -> None:
    """Write RUN_DIR's results as a grading bundle (JSONL with a provenance header)."""
    from grading.bundle import InputError, write_bundle
    from runners.config import ConfigError, build_config
    from runners.pipelines import get_pipeline
    from runners.store import RunStore, RunStoreError

    try:
        store = RunStore.open_existing(run_dir)
        manifest = store.read_manifest()
    except RunStoreError as exc:
        raise UserError(str(exc)) from None
    assert manifest is not None  # open_existing checked that it is there
    try:
        cfg = build_config(manifest["config"])
    except ConfigError as exc:
        raise UserError(f"{run_dir}/manifest.json: its config no longer validates ({exc})") from None
    pipeline = get_pipeline(cfg.pipeline)
    if not hasattr(pipeline, "export_items"):
        raise UserError(f"pipeline '{cfg.pipeline}' produces nothing to grade")
    items = pipeline.export_items(cfg, store)
    if not items:
        raise UserError(
            f"{run_dir}: no gradable items, nothing written (no finished unit has an output with a known answer: "
            "hidden test outputs, or a run not finished yet: run its command again to finish it)"
        )
    run_id = manifest.get("run_id") or store.root.name  # manifests before run ids: the folder's name
    provenance = {
        "run_id": run_id,
        "run_dir": str(store.root),
        "experiment": cfg.experiment,
        "config_hash": manifest.get("config_hash"),
        "code": manifest.get("code"),
        "model": cfg.model.spec,
    }
    for item in items:  # each unit keeps the hash it was produced under; older journal lines had none
        unit_hash = item["provenance"].get("config_hash") or manifest["config_hash"]
        item["provenance"] = {**item["provenance"], "run_id": run_id, "config_hash": unit_hash}
    target = Path(out) if out else store.root / "export" / BUNDLE_NAME
    if target.is_dir():  # like `cp FILE DIR`: the bundle goes inside, under its default name
        target = target / BUNDLE_NAME
    blocker = next((p for p in target.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UserError(f"--out {out}: {blocker} is a file, so the bundle cannot be written there; name another path")
    try:
        write_bundle(target, items, provenance)
    except InputError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{len(items)} items → {target}")
