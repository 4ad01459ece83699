"""From a sampled completion to training sequences, by SEAL's splitting rules (seal-reference §B3).

The completion is split on `---`. Then, with newline splitting on, a segment holding "Question N: … Answer: …"
pairs gives one sequence per pair; any other segment gives one sequence per non-empty line, without a first line
that is a preamble (the second line starts with "1." and the first does not). Each sequence is later written as
"{title}\\n{segment}" and the passage itself is added as the last sequence (`KnowledgeDomain.sequences`).

`parse_completion` never raises: a completion with nothing usable is `Rejected` with code `empty`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from seal.domain import Rejected

_QA = re.compile(r"Question\s*\d+\s*:\s*(.*?)\s*Answer\s*:\s*(.*?)\s*(?=Question\s*\d+\s*:|\Z)", re.S)
_QA_PROBE = re.compile(r"Question\s*\d+\s*:.*?Answer\s*:", re.S)


def _lines(segment: str) -> list[str]:
    lines = [line.strip() for line in segment.split("\n") if line.strip()]
    if len(lines) >= 2 and lines[1].startswith("1.") and not lines[0].startswith("1."):
        lines = lines[1:]  # "Here are some implications:" before a numbered list
    if len(lines) == 1 and lines[0].endswith(":"):
        return []  # a preamble and nothing after it (the reply was cut off, or the model stopped)
    return lines


def split_completion(text: str, *, split_newlines: bool = True) -> list[str]:
    """The completion's training segments (without the title), in order."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    for segment in text.split("---"):
        segment = segment.strip()
        if not segment:
            continue
        if not split_newlines:
            out.append(segment)
        elif _QA_PROBE.search(segment):
            for question, answer in _QA.findall(segment):
                if question.strip() and answer.strip():
                    out.append(f"Question: {' '.join(question.split())}\nAnswer: {answer.strip()}")
        else:
            out.extend(_lines(segment))
    return out


@dataclass(frozen=True)
class Implications:
    """A parsed self-edit: the segments that become training sequences."""

    segments: tuple[str, ...]

    def key(self) -> str:
        return json.dumps(self.segments)

    def to_dict(self) -> dict[str, Any]:
        return {"segments": list(self.segments)}


def parse_completion(text: str, *, split_newlines: bool = True) -> Implications | Rejected:
    try:
        segments = split_completion(text, split_newlines=split_newlines)
    except Exception as exc:  # pragma: no cover - a bug here must not crash a run: it is recorded
        return Rejected(f"could not split the completion: {type(exc).__name__}: {exc}", "split_error")
    if not segments:
        shown = text.strip()[:80]
        return Rejected(
            f"nothing usable in the completion ({shown!r})" if shown else "the completion is empty", "empty"
        )
    return Implications(tuple(segments))
