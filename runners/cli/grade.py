"""``seal grade``: grade exported outputs offline with LLM judges, resumably; ``seal grade report DIR``.

Only click and the standard library are imported at module level; the grading package (and through it the
``ollama`` client) is imported when a command runs, so ``seal --help`` stays fast. Nothing here imports torch.

Exit codes: 0 all graded; 2 bad input or usage (nothing written); 1 a judge failed its preflight (nothing written);
3 items stayed unscored (judge down, unparseable or truncated replies) and ``--allow-unscored`` was not given;
130 interrupted.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

EXIT_JUDGE_UNAVAILABLE, EXIT_UNSCORED, EXIT_INTERRUPTED = 1, 3, 130
CACHE_NAME = "cache.sqlite"


class _GradeGroup(click.Group):
    """``seal grade INPUT…`` runs the grading command; ``seal grade report DIR`` rebuilds a report."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_GradeGroup)
def grade() -> None:
    """Grade exported outputs (bundles or published SEAL result files) with LLM judges, offline.

    \b
      seal grade INPUT... --judge ollama:llama3.2:3b [--out DIR] [--concurrency N] ...
      seal grade report DIR
      seal grade import RUN_DIR GRADES_DIR   (verdicts of a run's exported bundle back into the run)
    """


def _echo(message: str) -> None:
    click.echo(message, err=True)


@grade.command("run")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--judge",
    "judge_specs",
    multiple=True,
    metavar="SPEC",
    help="ollama:<model>, openai-compat:<base_url>#<model>, hf:<model>. Repeat "
    "for a panel (odd size). Without a judge only the deterministic metrics run.",
)
@click.option("--host", default=None, help="Ollama host [default: $OLLAMA_HOST or http://127.0.0.1:11434].")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Requests in flight per judge (match OLLAMA_NUM_PARALLEL).",
)
@click.option("--rubric", default="seal-yesno", show_default=True, help="seal-yesno or three-way (NAME@VERSION pins).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder: cache.sqlite, verdicts.jsonl, report.md, report.json and, when judged, "
    "verdicts.export.json [default: grades/<input>].",
)
@click.option(
    "--add",
    "add_inputs",
    is_flag=True,
    help="--out already grades other inputs: grade these beside them (one report over all).",
)
@click.option(
    "--replace",
    "replace_inputs",
    is_flag=True,
    help="--out already grades other inputs: report on these instead (the cached verdicts are kept).",
)
@click.option("--rescore", is_flag=True, help="Ask the judges again even for cached items.")
@click.option("--allow-unscored", is_flag=True, help="Exit 0 even when some items stayed unscored.")
@click.option("--seal-strict", is_flag=True, help="Free yes/no replies parsed by the published SEAL rule.")
@click.option("--cot", is_flag=True, help="Ask for a short rationale before the verdict.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.01),
    default=120.0,
    show_default=True,
    help="Seconds per request before it counts as failed (and is retried).",
)
@click.option(
    "--retries",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Attempts per request on busy / down / timed-out servers, with exponential back-off.",
)
@click.option(
    "--backoff",
    type=click.FloatRange(min=0.0),
    default=0.5,
    show_default=True,
    help="First back-off pause in seconds (doubles, at most 8 s).",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--num-ctx", type=click.IntRange(256), default=2048, show_default=True)
@click.option("--num-predict", type=click.IntRange(1), default=None, help="Reply token cap [default: by mode].")
@click.option("--keep-alive", default="30m", show_default=True, help="How long Ollama keeps the model loaded.")
@click.option(
    "--variance-sample",
    type=click.IntRange(0),
    default=20,
    show_default=True,
    help="Items re-judged with another seed to measure the judge's own variance.",
)
@click.option("--max-input-mb", type=click.FloatRange(min=0.001), default=256.0, show_default=True)
@click.option("--stream", is_flag=True, help="Stream Ollama replies (default: one JSON reply per request).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def run(
    inputs: tuple[Path, ...],
    judge_specs: tuple[str, ...],
    host: str | None,
    concurrency: int,
    rubric: str,
    out_dir: Path | None,
    add_inputs: bool,
    replace_inputs: bool,
    rescore: bool,
    allow_unscored: bool,
    seal_strict: bool,
    cot: bool,
    timeout: float,
    retries: int,
    backoff: float,
    seed: int,
    num_ctx: int,
    num_predict: int | None,
    keep_alive: str,
    variance_sample: int,
    max_input_mb: float,
    stream: bool,
    quiet: bool,
) -> None:
    """Grade INPUT files (export bundles or SEAL result files) into --out."""
    from grading.bundle import InputError, read_inputs
    from grading.cache import CacheError
    from grading.grade import GradeSettings
    from grading.judges import make_judge, parse_judge_spec, resolve_ollama_host
    from grading.rubrics import get_rubric

    if seal_strict and cot:
        raise click.UsageError("--seal-strict and --cot exclude each other")
    if add_inputs and replace_inputs:
        raise click.UsageError("--add and --replace exclude each other")
    try:
        chosen = get_rubric(rubric)
        settings = GradeSettings(
            rubric=chosen,
            mode="strict" if seal_strict else "cot" if cot else "structured",
            concurrency=concurrency,
            seed=seed,
            num_ctx=num_ctx,
            num_predict=num_predict,
            max_attempts=retries,
            backoff_s=backoff,
            variance_sample=variance_sample,
            rescore=rescore,
        )
        for spec in judge_specs:  # every spec and the host are checked before any input is read
            parse_judge_spec(spec)
        if host is not None:
            resolve_ollama_host(host)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    out = out_dir or Path("grades") / inputs[0].stem
    _check_out(out, "--out" if out_dir else "the default --out")
    try:
        loaded = read_inputs(inputs, max_bytes=int(max_input_mb * 2**20))
        for source in loaded.sources:
            if source.n_items == 0:
                raise InputError(
                    Path(source.path), None, None, "nothing to grade: it holds no items (was the run finished?)"
                )
        earlier = _earlier_inputs(out)
        if earlier and {s["sha256"] for s in earlier} != {s.sha256 for s in loaded.sources}:
            if add_inputs:
                _check_add_keeps_judges(out, judge_specs)
                loaded = read_inputs(_added(earlier, loaded.sources), max_bytes=int(max_input_mb * 2**20))
            elif not replace_inputs:
                held = ", ".join(f"{s['path']} (sha256 {s['sha256'][:12]})" for s in earlier)
                raise click.UsageError(
                    f"{out} already holds the grading of other inputs: {held}. Pass --add to grade these beside "
                    "them, --replace to report on these instead (cached verdicts are kept), or another --out"
                )
    except (InputError, CacheError) as exc:
        raise click.UsageError(_cache_hint(exc)) from None
    try:
        judges = [make_judge(s, host=host, timeout=timeout, keep_alive=keep_alive, stream=stream) for s in judge_specs]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_meta = {"inputs": [vars(source) | {"provenance": dict(source.provenance)} for source in loaded.sources]}
    if not judge_specs and not quiet:
        _echo("no --judge given: computing the deterministic metrics only")
    report = _grade_into(out, loaded.items, judges, settings, run_meta, quiet)
    _summarise(out, report)
    if report["unscored"]["items"] and not allow_unscored:
        _echo(_unscored_advice(report["unscored"]))
        sys.exit(EXIT_UNSCORED)


def _unscored_advice(unscored: dict[str, Any]) -> str:
    """What to do about the unscored items: failed requests are retried by running again, but a reply without a
    verdict is cached and would be read back as it is."""
    items, retryable = unscored["items"], unscored.get("retryable_items", unscored["items"])
    parts = []
    if retryable:
        parts.append(
            f"{retryable} by failed requests (run the same command again to retry them; cached verdicts are kept)"
        )
    if items - retryable:
        parts.append(
            f"{items - retryable} by replies that held no verdict (unparseable or truncated; they are cached, so pass "
            "--rescore to ask again, or grade with another --judge)"
        )
    return f"{items} item(s) stayed unscored: {', '.join(parts)}. Or pass --allow-unscored to accept them"


def _check_out(out: Path, option: str) -> None:
    """Refuse an --out that cannot become a folder (it, or a folder above it, is a file), before any write."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == out else f"cannot hold folders: {path} is a file"
                raise click.UsageError(f"{option} {out} {what}; choose a folder for --out")
            return


def _cache_hint(exc: Exception) -> str:
    from grading.cache import CacheError

    if isinstance(exc, CacheError):
        return f"{exc}; delete it (its cached verdicts are lost) or choose another --out"
    return str(exc)


def _check_add_keeps_judges(out: Path, judge_specs: tuple[str, ...]) -> None:
    """`--add` reports over every input with this command's judges: without --judge, the earlier judges' column
    would silently vanish from the report, so that is refused."""
    from grading.cache import JudgementCache

    with JudgementCache(out / CACHE_NAME) as cache:
        recorded = [judge["name"] for judge in cache.meta().get("judges", [])]
    if recorded and not judge_specs:
        again = " ".join(f"--judge {name}" for name in recorded)
        raise click.UsageError(
            f"--add without --judge would report {out} with no judge, though it was graded by "
            f"{', '.join(recorded)}: pass {again} to grade the new inputs with them too, or choose another --out"
        )


def _earlier_inputs(out: Path) -> list[dict[str, Any]]:
    """The inputs an earlier `seal grade` into `out` graded (empty when `out` holds none)."""
    from grading.cache import JudgementCache

    if not (out / CACHE_NAME).is_file():
        return []
    with JudgementCache(out / CACHE_NAME) as cache:
        return list(cache.meta().get("inputs", []))


def _added(earlier: list[dict[str, Any]], new: Any) -> list[Path]:
    """The earlier inputs (each still there and unchanged) followed by the new ones not among them."""
    import hashlib

    from grading.bundle import InputError

    paths = []
    for source in earlier:
        path = Path(source["path"])
        if not path.is_file():
            raise InputError(path, None, None, "graded into this --out before but gone now: restore it, or --replace")
        if hashlib.sha256(path.read_bytes()).hexdigest() != source["sha256"]:
            raise InputError(path, None, None, "changed since it was graded into this --out: --replace, or restore it")
        paths.append(path)
    known = {s["sha256"] for s in earlier}
    return paths + [Path(s.path) for s in new if s.sha256 not in known]


def _grade_into(
    out: Path, items: Any, judges: Any, settings: Any, run_meta: dict[str, Any], quiet: bool
) -> dict[str, Any]:
    from grading.cache import CacheError, JudgementCache
    from grading.grade import grade as grade_items
    from grading.grade import preflight_all
    from grading.judges import JudgeError
    from grading.report import write_outputs

    log = None if quiet else _echo
    if judges and not any(item.kind == "qa" for item in items):
        # ARC metrics are deterministic: a judge is never asked, so it need not be reachable either.
        if log is not None:
            log("no question-answer items: the judges are not contacted (ARC metrics need none)")
        judges = []
    opened: list[JudgementCache] = []

    async def go() -> Any:
        try:
            # The judges answer before anything is written: a refused command leaves no --out behind.
            infos = await preflight_all(judges, settings)
            opened.append(JudgementCache(out / CACHE_NAME))
            return await grade_items(items, judges, settings, opened[0], run_meta=run_meta, log=log, infos=infos)
        finally:
            for judge in judges:
                await judge.aclose()

    try:
        try:
            outcome = asyncio.run(go())
        except JudgeError as exc:
            _echo(f"Error: judge unavailable: {exc}")
            sys.exit(EXIT_JUDGE_UNAVAILABLE)
        except CacheError as exc:
            raise click.UsageError(_cache_hint(exc)) from None
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        except KeyboardInterrupt:
            if opened:
                write_outputs(opened[0], out)
                _echo(f"interrupted: what was graded is kept in {out / CACHE_NAME}; run the same command to resume")
            else:
                _echo("interrupted before grading began: nothing was written")
            sys.exit(EXIT_INTERRUPTED)
        cache = opened[0]
        for name, reason in outcome.judges_down.items():
            _echo(f"judge {name} stopped: {reason}")
        if not quiet:
            _echo(
                f"{outcome.items} items: {outcome.cached} judge calls answered from the cache, {outcome.sent} "
                f"requests sent; {outcome.scored} new verdicts, {outcome.stored - outcome.scored} unparseable or "
                f"truncated replies, {outcome.failed} votes failed (unscored, never wrong)"
            )
        return write_outputs(cache, out)
    finally:
        for cache in opened:
            cache.close()


def _summarise(out: Path, report: dict[str, Any]) -> None:
    overall = report["overall"]
    if "qa" in overall:
        qa = overall["qa"]
        parts = [f"EM {_pct(qa['metrics']['em'])}", f"F1 {_pct(qa['metrics']['f1'])}"]
        for name, summary in qa.get("judges", {}).items():
            parts.append(f"{name} {_pct(summary['accuracy'])} (unscored {_pct(summary['unscored_rate'])})")
        click.echo(f"qa: {qa['n']} items; " + "; ".join(parts))
    if "arc" in overall:
        arc = overall["arc"]
        click.echo(
            f"arc: {arc['n']} tests; pass@2 {_pct(arc['pass@2'])}; tasks solved {arc['tasks_solved']}/"
            f"{arc['tasks']}; unparseable attempts {arc['unparseable_attempts']}"
        )
    click.echo(f"report: {out / 'report.md'}")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


@grade.command("report")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of report.md.")
def report(directory: Path, as_json: bool) -> None:
    """Rebuild verdicts.jsonl, report.md and report.json of DIR from its cache, and print the report."""
    import json

    from grading.cache import CacheError, JudgementCache
    from grading.report import render_markdown, write_outputs

    if not (directory / CACHE_NAME).is_file():
        raise click.UsageError(f"{directory} holds no grading run ({CACHE_NAME} is missing); run `seal grade` first")
    try:
        with JudgementCache(directory / CACHE_NAME) as cache:
            built = write_outputs(cache, directory)
    except CacheError as exc:
        raise click.UsageError(f"{exc}; delete it and grade again (its cached verdicts are lost)") from None
    click.echo(json.dumps(built, indent=2) if as_json else render_markdown(built))


@grade.command("import")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("grades_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def import_cmd(run_dir: Path, grades_dir: Path) -> None:
    """Bring the verdicts in GRADES_DIR (the --out folder of `seal grade BUNDLE --judge …`) back into RUN_DIR,
    whose bundle it graded; then run the run's command again to continue (its reward stage was waiting)."""
    from runners.deferred import DeferredGradingError, import_verdicts

    try:
        summaries = import_verdicts(run_dir, grades_dir)
    except DeferredGradingError as exc:
        raise click.UsageError(str(exc)) from None
    for summary in summaries:
        click.echo(f"imported {summary.line()}")
    click.echo(f"run the run's command again (e.g. `seal knowledge rl … --run-dir {run_dir}`) to continue")


if __name__ == "__main__":
    grade(prog_name="seal grade")
