"""`seal report`: a real (tiny) knowledge run gives Markdown, PNGs and one self-contained HTML page; the page is
loaded in headless Chromium (when installed; `.ci/run` installs it) and every image must have rendered."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from runners.cli import main
from tests.unit.runners.test_knowledge_pipeline import SMALL

CHECK = (
    "<script>window.addEventListener('load', () => {const ok = [...document.images].filter("
    "i => i.complete && i.naturalWidth > 0).length; document.body.setAttribute('data-rendered', ok + '/' + "
    "document.images.length);});</script>"
)


@pytest.fixture(autouse=True)
def _private_model_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path_factory.getbasetemp() / "seal-cache-pipeline"))


def test_a_run_report_has_every_plot_and_its_page_renders(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ran = CliRunner().invoke(main, ["knowledge", "rl", "demo", "--run-dir", str(run_dir), *SMALL])
    assert ran.exit_code == 0, ran.output
    result = CliRunner().invoke(main, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    folder = run_dir / "report"
    expected = ["conditions.png", "rewards.png", "heatmap.png", "losses.png", "memory.png"]
    for name in expected:
        assert (folder / name).stat().st_size > 1000, name
        assert f"]({name})" in (folder / "report.md").read_text()
    # the pipeline's summary ends with "report: PATH" for the terminal; inside the report it only points elsewhere
    assert "report: " not in (folder / "report.md").read_text()
    page = (folder / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(expected)  # self-contained: no file references
    assert "passage + self-edits after RL iteration 1" in page

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium); the files were checked")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK + "</body>"))
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--user-data-dir=" + str(tmp_path / "chromium"), "--virtual-time-budget=5000", "--dump-dom",
         probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    rendered = re.search(r'data-rendered="(\d+)/(\d+)"', dom.stdout)
    assert rendered is not None, dom.stderr[-2000:]
    assert rendered.group(1) == rendered.group(2) == str(len(expected))


def test_report_of_a_folder_that_is_no_run_is_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "no manifest.json here" in result.output and "Traceback" not in result.output
