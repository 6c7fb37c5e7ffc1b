"""The HTML model report: built from a real pipeline run, rendered in real headless Chromium.

The browser test opens the file offline, records every request the page makes, checks that
every chart rendered with a non-zero size, and saves a full-page screenshot.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import query, run_cli
from headless_chromium import Chromium, find_chromium

EXPECTED_CHARTS = [
    *(
        f"{model}-{kind}"
        for model in ("churn", "conversion")
        for kind in ("roc", "pr", "gains", "lift", "calibration", "scores", "factors")
    ),
    "clv-tracking",
    "clv-holdout",
    "clv-alive",
    "clv-distribution",
    "segment-sizes",
    "segment-profiles",
    "category-popularity",
    "category-coaffinity",
    "drift-psi",
]
LOCAL_SCHEMES = ("file:", "data:", "about:")


@pytest.fixture(scope="module")
def report(built_warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "index.html"
    result = run_cli("report", "--warehouse", str(built_warehouse), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"report:      {out}" in result.stdout
    return out


def test_run_writes_the_report_beside_the_warehouse(built_warehouse: Path) -> None:
    page = built_warehouse.parent / "reports" / "index.html"
    assert page.is_file(), "profile-enrichment run did not write reports/index.html"
    assert 'data-chart="churn-roc"' in page.read_text()


def test_report_is_one_self_contained_file(report: Path) -> None:
    text = report.read_text()
    charts = re.findall(r'<figure class="chart" data-chart="([^"]+)"', text)
    placeholders = re.findall(r'data-chart="([^"]+)" data-empty="true"', text)
    # Only the holdout comparison may be a placeholder (a refit on the small test data can
    # fail); everything else must be drawn.
    assert set(placeholders) <= {"clv-holdout"}, placeholders
    assert sorted(charts) == sorted(EXPECTED_CHARTS)
    # Nothing to fetch: no script, no stylesheet link, no remote URL in any src/href.
    assert "<script" not in text
    assert not re.search(r"<link\b", text)
    remote = re.findall(r'(?:src|href)\s*=\s*"(?!#|data:)([^"]+)"', text)
    assert remote == [], remote


def test_report_numbers_agree_with_the_warehouse(built_warehouse: Path, report: Path) -> None:
    text = report.read_text()
    profiles = query(built_warehouse, "select count(*) from profile_insights")[0][0]
    assert f"{profiles:,} profiles" in text
    as_of = query(built_warehouse, "select cast(as_of_date as varchar) from int_run_as_of_date")
    assert f"As of {as_of[0][0]}" in text


def test_validation_rows_are_the_rows_behind_the_registry_metrics(built_warehouse: Path) -> None:
    """The curves' source table matches each champion: same count, and the AUC integrated
    from the report's SQL-binned ROC curve agrees with the registry's ROC AUC."""
    import duckdb

    from profile_enrichment.report import queries

    champions = query(
        built_warehouse,
        "select model_name, model_version, n_valid, metrics_json from model_registry "
        "where status = 'champion' and model_name in ('churn', 'conversion')",
    )
    assert {c[0] for c in champions} == {"churn", "conversion"}
    con = duckdb.connect(str(built_warehouse), read_only=True)
    try:
        for name, version, n_valid, metrics_json in champions:
            rows = con.execute(
                "select count(*), count(distinct model_version), any_value(model_version) "
                "from propensity_validation_predictions where model_name = ?",
                [name],
            ).fetchone()
            assert rows == (n_valid, 1, version)
            curve = queries.threshold_curve(con, name)
            fpr = np.r_[0.0, curve["fpr"].to_numpy()]
            tpr = np.r_[0.0, curve["tpr"].to_numpy()]
            auc = float(np.trapezoid(tpr, fpr))
            assert auc == pytest.approx(json.loads(metrics_json)["roc_auc"], abs=0.01)
            pct = queries.percentiles(con, name)
            gains = queries.gains(pct)
            assert gains["captured"].iloc[-1] == pytest.approx(1.0)
            deciles = queries.deciles(pct)
            assert list(deciles["decile"]) == list(range(1, 11))
            # Probabilities descend with the decile, and the rates average to the base rate.
            assert deciles["mean_probability"].is_monotonic_decreasing
            base = json.loads(metrics_json)["base_rate"]
            weighted = (deciles["observed_rate"] * deciles["customers"]).sum() / n_valid
            assert weighted == pytest.approx(base)
    finally:
        con.close()


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    executable = find_chromium()
    if executable is None:
        pytest.fail(
            "chromium is not installed: `make test` installs it (make chromium), or "
            "apt-get install chromium"
        )
    screenshot = Path(os.environ.get("PE_REPORT_SCREENSHOT_DIR", tmp_path)) / "report.png"
    with Chromium(executable) as browser:
        session = browser.open(report.as_uri(), width=1400, height=900)
        boxes = browser.evaluate(
            session,
            """JSON.stringify([...document.querySelectorAll('figure.chart')].map(f => {
                const svg = f.querySelector('svg');
                const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
                return {id: f.dataset.chart, width: r.width, height: r.height,
                        empty: f.dataset.empty === 'true',
                        texts: svg ? svg.querySelectorAll('text').length : 0};
            }))""",
        )
        browser.screenshot(session, screenshot)
        urls = browser.requested_urls(session)
    charts = json.loads(boxes)
    assert sorted(c["id"] for c in charts) == sorted(EXPECTED_CHARTS)
    flat = [c for c in charts if not (c["width"] > 50 and c["height"] > 50)]
    assert flat == [], f"charts that did not render: {flat}"
    # Every chart carries readable text (title, axis labels), not just shapes.
    assert all(c["texts"] >= 3 for c in charts if not c["empty"]), charts
    assert urls, "the browser recorded no request at all: the recorder is broken"
    left = [u for u in urls if not u.startswith(LOCAL_SCHEMES)]
    assert left == [], f"requests that left the machine: {left}"
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


def test_report_on_a_missing_warehouse_is_one_line(tmp_path: Path) -> None:
    result = run_cli("report", "--warehouse", str(tmp_path / "none.duckdb"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: warehouse not found")
    assert "hint:" in lines[0]


def test_report_on_an_empty_warehouse_says_to_run_first(tmp_path: Path) -> None:
    import duckdb

    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    result = run_cli("report", "--warehouse", str(empty))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "run `profile-enrichment run` first" in result.stderr


def test_dbt_progress_summarises_n_of_m_lines() -> None:
    from profile_enrichment.progress import DbtProgress

    lines = [
        "12:00:01  Running with dbt=1.11.0\n",
        "12:00:02  1 of 3 START sql table model main.a ..... [RUN]\n",
        "12:00:03  1 of 3 OK created sql table model main.a ..... [OK in 0.1s]\n",
        "12:00:03  2 of 3 START test not_null_a_id ..... [RUN]\n",
        "12:00:03  2 of 3 WARN 4 value_between_a ..... [WARN 4 in 0.0s]\n",
        "12:00:04  3 of 3 \x1b[32mPASS\x1b[0m unique_a_id ..... [PASS in 0.0s]\n",
    ]
    with DbtProgress() as bar:
        absorbed = [bar.feed(line) for line in lines]
    assert all(absorbed)
    assert (bar.done, bar.problems) == (3, 1)
    task = bar.bar.tasks[0]
    assert (task.completed, task.total, task.fields["current"]) == (3, 3, "unique_a_id")
