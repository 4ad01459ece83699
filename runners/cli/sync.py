"""`seal pull URL DIR` and `seal push RUN_DIR`: move a synced run between machines (runners/sync.py)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from runners.cli.driver import UserError


def _link(root: Path, url: str, elsewhere: str):  # type: ignore[no-untyped-def]
    """The sync of `root` to `url`; `elsewhere`: what to do when `root` already syncs somewhere else."""
    from runners.sync import RunSync, SyncError, normalize_target, recorded_url

    try:
        recorded = recorded_url(root)
        target = normalize_target(url)
        if recorded is not None and recorded != target.rstrip("/"):
            raise SyncError(f"{root} syncs to {recorded}, not {target}; {elsewhere}")
        return RunSync(root, target)
    except SyncError as exc:
        raise UserError(str(exc)) from None


@click.command("pull")
@click.argument("url")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--artifacts", "all_artifacts", is_flag=True,
              help="Download every committed artifact now (default: each when a stage needs it).")  # fmt: skip
def pull(url: str, run_dir: Path, all_artifacts: bool) -> None:
    """Restore the run pushed to URL into RUN_DIR (new, empty, or a copy of the same run) to resume it here; RUN_DIR
    then keeps syncing to URL."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file, not a run directory: name a folder")
    foreign = run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / "manifest.json").exists()
    if foreign and _recorded(run_dir) is None:  # a pull cut off before the manifest came recorded its URL: resumable
        raise UserError(
            f"{run_dir} is not empty and holds no run: pull into a new or empty directory (or a copy of this run)"
        )
    link = _link(run_dir, url, "pull into a new directory")
    try:
        if not link.remote_has_run():
            raise UserError(f"{url}: no manifest.json there; is this the URL a run was pushed to?")
        remote = link.read_remote_json("manifest.json")
        local_manifest = run_dir / "manifest.json"
        if local_manifest.exists():
            local = json.loads(local_manifest.read_text(encoding="utf-8"))
            if local.get("run_id") != remote.get("run_id"):
                raise UserError(
                    f"{run_dir} holds run {local.get('run_id')}, {url} holds run {remote.get('run_id')}: "
                    "pull into a new directory"
                )
        summary = link.pull(artifacts=all_artifacts)
        link.remember_url()
    except UserError:
        raise
    except Exception as exc:
        raise UserError(_failure(url, "pull", exc, "run it again to continue")) from None
    stages = sorted({p.parent.name for p in (run_dir / "stages").glob("*/journal*.jsonl")})
    click.echo(
        f"run {remote.get('run_id')} → {run_dir}: {_count(len(summary.files), 'file')}, "
        f"{_count(summary.journal_lines, 'journal line')} ({_count(len(stages), 'stage')}), "
        f"{_count(len(summary.artifacts), 'artifact')}"
        + ("" if all_artifacts else " (the others are fetched when a stage needs them)")
    )
    argv = remote.get("argv") or []
    if argv:
        click.echo("resume with: " + shlex.join(_resume_command(argv, run_dir)))


def _recorded(run_dir: Path) -> str | None:
    from runners.sync import SyncError, recorded_url

    try:
        return recorded_url(run_dir)
    except SyncError as exc:
        raise UserError(str(exc)) from None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _failure(url: str, action: str, exc: Exception, retry: str) -> str:
    """One line: what to fix for a failure that retrying cannot cure (a file where a folder is needed, no
    credentials, no bucket), else the advice to retry (the network, a server that is down)."""
    from runners.sync import permanent_failure

    problem = permanent_failure(exc)
    if problem is not None:
        return f"{url}: {action} failed: {problem}"
    return f"{url}: {action} failed ({type(exc).__name__}: {exc}); {retry}"


def _resume_command(argv: list[str], run_dir: Path) -> list[str]:
    """The recorded command line pointed at the new directory (its --run-dir and --sync-to replaced)."""
    out, skip = ["seal"], False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg in ("--run-dir", "--sync-to"):
            skip = True
            continue
        if arg.startswith(("--run-dir=", "--sync-to=")):
            continue
        out.append(arg)
    return [*out, "--run-dir", str(run_dir)]


@click.command("push")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "url", default=None, metavar="URL", help="Where to push (default: where RUN_DIR syncs to).")
def push(run_dir: Path, url: str | None) -> None:
    """Push what RUN_DIR has not pushed yet, now, in the foreground (what a run left unpushed when the remote was
    unreachable at its end)."""
    url = url or _recorded(run_dir)
    if url is None:
        raise UserError(f"{run_dir} has never synced anywhere: name the destination with --to URL")
    if not (run_dir / "manifest.json").exists():
        raise UserError(f"{run_dir}: no manifest.json here; is this a run directory?")
    advice = f"leave out --to to push there, or delete {run_dir / '.sync'} to push everything to the new place"
    link = _link(run_dir, url, advice)
    try:
        summary = link.push()
    except Exception as exc:
        left = len(link.pending())
        message = _failure(url, "push", exc, "run `seal push` again")
        raise UserError(f"{message} ({left} changes are still only in {run_dir}, safe)") from None
    click.echo(f"{run_dir} → {url}: {len(summary.uploaded)} objects, {summary.bytes / 2**20:.1f} MiB; up to date")
