"""The report in a real browser: headless Chromium (Debian's ``chromium``, installed by .ci/run).

Each page must load without any console message or script error, show every table the HTML
declares, pass the page's own sorting self-test (``?selftest``), and render a screenshot.
It skips, with the reason, where no Chromium can be had (.ci/run installs it where apt-get can).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports.site import build_report
from tests.demo_store import make_demo_store

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # any network request would fail loudly
    "--enable-logging=stderr",
    "--v=0",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    pytest.skip("headless Chromium not found: install Debian's `chromium` (.ci/run tries to)")


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [_chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    store = root / "results.duckdb"
    experiment = make_demo_store(store, n_users=120)
    build_report(store, root / "report", experiment)
    return root / "report"


@pytest.mark.parametrize("page", ["index.html", "dataset-douban.html"])
def test_report_opens_in_headless_chromium(report, page, tmp_path):
    html = (report / page).read_text()
    table_ids = re.findall(r'<figure class="table" id="([^"]+)"', html)
    n_tables = html.count("<table")
    assert n_tables >= 3
    url = (report / page).resolve().as_uri() + "?selftest"

    dom = _run(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], "\n".join(console)
    root = re.search(r"<html[^>]*>", dom.stdout).group(0)
    assert 'data-report-ready="1"' in root, root  # the inline script ran to its end
    assert 'data-selftest="ok"' in root, root  # clicking a header sorts and restores
    assert "data-js-error" not in root, root
    assert f'data-tables="{n_tables}"' in root
    assert dom.stdout.count("<table") == n_tables
    for ident in table_ids:
        assert f'id="{ident}"' in dom.stdout, ident

    shot = tmp_path / f"{page}.png"
    res = _run(["--window-size=1400,1800", f"--screenshot={shot}", url], tmp_path / "profile-shot")
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
