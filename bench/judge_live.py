"""The live judge: the real llama.cpp server (llama-cpp-python) with SmolLM2-135M-Instruct, through `seal grade`.

Starts the server on 127.0.0.1 (one thread, the fixture in ``tests/fixtures/llamacpp_server.py``), writes N QA
items (SQuAD questions with their gold answers; the candidate answer is the gold answer for half of them and
another span of the same passage for the other half, so the truth is known) and grades them with the
``openai-compat:`` judge through the real ``seal grade`` command, at concurrency 1 and then 2, each into a fresh
cache. Reports items/s (``seal grade``'s own ``items_per_s``: items over the grading run's wall time, preflight
included), the unscored fraction, and the judge's agreement with the truth (percent and Cohen's kappa, from the
report's judge-vs-labels section).

``--seal-file PATH`` also grades a published SEAL knowledge-incorporation result file (GPT-4.1 verdicts in
``baseline_correct``/``adapter_correct``), cut to its first articles holding ``--seal-items`` items, and adds the
judge's agreement and kappa with the published labels.

llama-cpp-python's server runs one request at a time (its requests share one model behind a lock and it has no
``--n_parallel``), so concurrency 2 overlaps only the HTTP and the harness around the model.

    OMP_NUM_THREADS=1 .venv/bin/python bench/judge_live.py [--items 60] [--seal-file /tmp/seal_naive.json]

Prints one JSON object as its last line.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from grading.bundle import Item, write_bundle
from tests.fixtures.llamacpp_server import MODEL_LABEL, LlamaCppServer, missing

REPO = Path(__file__).resolve().parents[1]
SHARED_SQUAD = Path("/work/shared/data/squad_val.json")
REPO_PASSAGES = REPO / "data" / "knowledge" / "passages.json"
TRUTH = "truth"


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _wrong_span(context: str, gold: str, others: list[str], index: int) -> str | None:
    """Another answer of the same passage, else a few words of it, that neither contains nor is in the gold."""
    gold_n = _norm(gold)

    def far(span: str) -> bool:
        span_n = _norm(span)
        return bool(span_n) and span_n not in gold_n and gold_n not in span_n

    for other in others[index:] + others[:index]:
        if far(other):
            return other
    words = context.split()
    for start in range(index % max(1, len(words) - 4), len(words) - 4, 7):
        span = " ".join(words[start : start + 4]).strip(".,;:")
        if far(span):
            return span
    return None


def qa_items(path: Path, n: int) -> list[Item]:
    """``n`` items: gold answer as the candidate for even ones, another passage span for odd ones."""
    articles = json.loads(path.read_text())
    items: list[Item] = []
    for a_index, article in enumerate(articles):
        questions = [q for q in article["questions"] if isinstance(q.get("answer"), str) and q["answer"].strip()]
        answers = [q["answer"] for q in questions]
        for q_index, question in enumerate(questions):
            if len(items) >= n:
                return items
            correct = len(items) % 2 == 0
            candidate = (
                question["answer"]
                if correct
                else _wrong_span(article["context"], question["answer"], answers, q_index + 1)
            )
            if candidate is None:
                continue
            items.append(
                Item(
                    f"live/a{a_index}/q{q_index}",
                    "qa",
                    f"Topic: {article['title']}\n{question['question']}",
                    (question["answer"],),
                    candidate,
                    {"source": path.name, "article": a_index, "question": q_index},
                    group="gold" if correct else "wrong-span",
                    labels={TRUTH: correct},
                )
            )
    return items


def seal_subset(path: Path, n_items: int, out: Path) -> Path:
    """The first articles of a SEAL result file holding at least ``n_items`` items (2 per question: both arms)."""
    document = json.loads(path.read_text())
    kept, count = [], 0
    for article in document["articles"]:
        if count >= n_items:
            break
        kept.append(article)
        count += 2 * sum(len(c.get("questions", [])) for c in article.get("completions", []))
    out.write_text(json.dumps({**document, "articles": kept}))
    return out


def seal_grade(inputs: list[Path], judge: str, out: Path, concurrency: int) -> tuple[dict[str, Any], float]:
    command = [sys.executable, "-m", "runners.cli", "grade", *map(str, inputs), "--judge", judge]
    command += ["--out", str(out), "--concurrency", str(concurrency), "--variance-sample", "0"]
    command += ["--timeout", "300", "--quiet", "--allow-unscored"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"seal grade failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads((out / "report.json").read_text()), wall


def summary(report: dict[str, Any], judge: str, label: str) -> dict[str, Any]:
    qa = report["overall"]["qa"]["judges"][judge]
    versus = report["judge_vs_labels"][label][judge]
    return {
        "items": report["n_items"],
        "items_per_s": report["throughput"]["items_per_s"],
        "wall_s": report["throughput"]["wall_s"],
        "requests_sent": report["throughput"]["requests_sent"],
        "latency_p50_s": report["throughput"]["latency_p50_s"],
        "unscored_fraction": qa["unscored_rate"],
        "unscored_by_reason": report["unscored"]["by_reason"],
        "judge_accuracy": qa["accuracy"],
        "agreement": versus["agreement"],
        "kappa": versus["kappa"],
        "labelled_scored": versus["n"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--source", type=Path, default=None, help="SQuAD-style passages [default: shared or repo]")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seal-file", type=Path, default=None, help="a published SEAL knowledge result file")
    parser.add_argument("--seal-items", type=int, default=300)
    parser.add_argument("--keep", type=Path, default=None, help="keep the grading folders here")
    args = parser.parse_args()
    reason = missing()
    if reason:
        raise SystemExit(reason)
    source = args.source or (SHARED_SQUAD if SHARED_SQUAD.is_file() else REPO_PASSAGES)
    items = qa_items(source, args.items)
    with tempfile.TemporaryDirectory(prefix="judge-live-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        bundle = write_bundle(work / "live.jsonl", items, {"bench": "judge_live", "source": str(source)})
        result: dict[str, Any] = {"source": str(source), "runs": {}}
        with LlamaCppServer(n_threads=args.threads) as server:
            result["server_startup_s"] = server.startup_s
            for concurrency in args.concurrency:
                report, wall = seal_grade([bundle], server.judge_spec, work / f"c{concurrency}", concurrency)
                run = summary(report, server.judge_spec, TRUTH)
                run["command_wall_s"] = wall
                result["runs"][str(concurrency)] = run
                print(f"concurrency {concurrency}: {json.dumps(run)}", flush=True)
            if args.seal_file is not None:
                subset = seal_subset(args.seal_file, args.seal_items, work / "seal_subset.json")
                report, wall = seal_grade([subset], server.judge_spec, work / "seal", 1)
                published = summary(report, server.judge_spec, "seal_published")
                published["command_wall_s"] = wall
                published["file"] = str(args.seal_file)
                result["published"] = published
                print(f"published labels: {json.dumps(published)}", flush=True)
            result["server_chat_requests"] = server.chat_requests()
            version = server.version
        server.remove_log()
    runs = result["runs"]
    first = runs[str(args.concurrency[0])]
    line: dict[str, Any] = {
        "bench": "judge_live",
        "live_items": len(items),
        "items_per_s": {c: r["items_per_s"] for c, r in runs.items()},
        "unscored_fraction": {c: r["unscored_fraction"] for c, r in runs.items()},
        "agreement_with_truth": first["agreement"],
        "kappa_with_truth": first["kappa"],
        "server": f"llama.cpp {version}",
        "model": MODEL_LABEL,
        "threads": args.threads,
        "source": result["source"],
        "server_startup_s": result["server_startup_s"],
    }
    if "published" in result:
        published = result["published"]
        line |= {
            "agreement_with_published": published["agreement"],
            "kappa_with_published": published["kappa"],
            "items": published["items"],
            "published_unscored_fraction": published["unscored_fraction"],
            "published_items_per_s": published["items_per_s"],
        }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
