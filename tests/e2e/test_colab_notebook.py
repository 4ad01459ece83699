"""notebooks/colab_quickstart.ipynb, run headless the way CI runs it: every cell not tagged `colab` executes in a
real Jupyter kernel with the tiny model. The first run is cut off by SIGKILLing the `seal` process mid-chunk (what
a Colab disconnect does to the work in flight); running the notebook again in a fresh kernel, as a user does after
reconnecting, skips what was recorded, finishes the evaluation and exports the bundle."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the dev extra (nbformat, nbclient)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the dev extra (nbformat, nbclient)")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "colab_quickstart.ipynb"
SETS = ["model.spec=tiny", "ttt_data.nmax=6", "infer.max_new_tokens=8"]


def _prepared(run_dir: Path) -> Any:
    """The notebook less its Colab-only cells, with the parameters cell set to a tiny CPU configuration."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cells = []
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if "colab" in tags:
            continue
        if "parameters" in tags:
            cell.source = (
                f"RUN_DIR = {str(run_dir)!r}\nEXPERIMENT = 'demo_ttt'\nPROFILE = 'cpu'\nSETS = {SETS!r}\nCHUNKS = 2"
            )
        cells.append(cell)
    notebook.cells = cells
    return notebook


def _execute(notebook: Any) -> Any:
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    return client.execute()


def _seal_processes(run_dir: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(run_dir).encode() in command and b"run" in command and b"ttt" in command:
                found.append(int(entry.name))
    return found


def _journal(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "stages" / "ttt" / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _outputs(notebook: Any) -> str:
    return "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))


def test_the_notebook_resumes_after_a_disconnect_and_exports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))  # the kernel and its `seal` processes inherit it
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_dir = tmp_path / "drive" / "seal-runs" / "quickstart"
    killed: list[int] = []

    def disconnect() -> None:  # once the first task is journaled, kill whatever `seal` process runs next
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            if _journal(run_dir):
                for pid in _seal_processes(run_dir):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=disconnect, daemon=True)
    watcher.start()
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="exited -9"):
        _execute(_prepared(run_dir))
    watcher.join(timeout=5)
    assert killed, "the first run finished before it could be cut off"
    recorded = _journal(run_dir)
    assert len(recorded) == 1 and not (run_dir / "export").exists()

    resumed = _execute(_prepared(run_dir))  # a fresh kernel: the user reconnects and runs the cells again
    text = _outputs(resumed)
    assert "1 already recorded" in text
    final = _journal(run_dir)
    assert [line["status"] for line in final] == ["ok", "ok"] and final[0] == recorded[0]
    bundle = (run_dir / "export" / "bundle.jsonl").read_text().splitlines()
    header = json.loads(bundle[0])
    assert header["format"] == "seal-grading-bundle" and header["n_items"] == len(bundle) - 1 > 0
