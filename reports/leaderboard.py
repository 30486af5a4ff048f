"""Entry point of the static HTML report (kept for the runner and the CLI).

The report is built from the store's views only (never from training code); see
:mod:`reports.site` for the pages, :mod:`reports.tables` for the paper's tables,
:mod:`reports.stats` / :mod:`reports.compare` for the statistics and :mod:`reports.paper` for the
published numbers.
"""

from __future__ import annotations

from reports.options import ReportOptions
from reports.site import build_report, write_report

__all__ = ["ReportOptions", "build_report", "write_report"]
