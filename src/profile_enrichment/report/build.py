"""Build the self-contained HTML model report from a built warehouse.

All numbers come from SQL aggregates over a read-only connection (report/queries.py); charts are
drawn with matplotlib and inlined as SVG (report/charts.py). The output is one HTML file with
no external reference, so it opens offline and can be attached to an email.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profile_enrichment.errors import UserError
from profile_enrichment.report import charts, queries

REQUIRED_TABLES = ("int_run_as_of_date", "model_registry", "profile_insights")


@dataclass
class ReportResult:
    path: Path
    bytes: int
    charts: int
    seconds: float


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):,.{digits}f}"
    return _esc(value)


def _table(frame: pd.DataFrame, columns: dict[str, str], row_class: Any = None) -> str:
    head = "".join(f"<th>{_esc(label)}</th>" for label in columns.values())
    body = []
    for row in frame.to_dict("records"):
        cls = row_class(row) if row_class else ""
        cells = "".join(f"<td>{_num(row.get(col))}</td>" for col in columns)
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv(pairs: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_num(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


class _Page:
    """Collects sections and counts charts."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.nav: list[tuple[str, str]] = []
        self.charts = 0

    def section(self, anchor: str, title: str) -> None:
        self.nav.append((anchor, title))
        self.parts.append(f'<section id="{anchor}"><h2>{_esc(title)}</h2>')

    def end(self) -> None:
        self.parts.append("</section>")

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def chart(self, chart_id: str, svg: str, caption: str, empty: bool = False) -> None:
        """A chart; ``empty`` marks a placeholder that says why there is nothing to draw."""
        self.charts += 1
        flag = ' data-empty="true"' if empty else ""
        self.parts.append(
            f'<figure class="chart" data-chart="{chart_id}"{flag}>{svg}'
            f"<figcaption>{caption}</figcaption></figure>"
        )


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------
def _overview(page: _Page, info: dict[str, Any], decisions: pd.DataFrame) -> None:
    page.section("overview", "Overview")
    scored = info["scored"]
    page.add('<div class="grid">')
    page.add(
        _kv(
            [
                ("as-of date", info["as_of_date"]),
                ("events read", info["records_read"]),
                ("accepted", info["accepted"]),
                ("quarantined", info["quarantined"]),
                ("profiles", info["profiles"]),
                ("scored for churn", scored["churn"]),
                ("scored for conversion", scored["conversion"]),
                ("with a lifetime value", scored["clv"]),
                ("in a segment", scored["segments"]),
            ]
        )
    )
    reasons = info["reasons"]
    if reasons.empty:
        page.add("<div><h3>Quarantine</h3><p>No record was quarantined.</p></div>")
    else:
        page.add(
            "<div><h3>Quarantined, by reason</h3>"
            + _table(reasons, {"reason_code": "reason", "records": "records"})
            + "</div>"
        )
    page.add("</div><h3>Models</h3>")
    page.add(
        _table(
            decisions,
            {
                "model": "model",
                "champion": "champion (scores)",
                "champion_trained": "trained as of",
                "this_run": "this run's version",
                "decision": "decision",
                "reason": "why",
            },
            row_class=lambda r: "warn" if r["decision"] in ("kept champion", "no model") else "",
        )
    )
    page.end()


def _propensity(page: _Page, con: Any, reg: pd.DataFrame, model: str) -> None:
    title = {"churn": "Churn propensity", "conversion": "Conversion propensity"}[model]
    page.section(model, title)
    entry = queries.champion_entry(reg, model)
    if entry is None:
        page.add("<p>No champion: this model was never published (see the overview).</p>")
        page.end()
        return
    m = entry["metrics"]
    page.add(
        _kv(
            [
                ("version", entry["model_version"]),
                ("chosen candidate", m.get("chosen_candidate")),
                ("validation snapshot", m.get("valid_as_of_date")),
                ("training rows / validation rows", f"{entry['n_train']:,} / {entry['n_valid']:,}"),
                ("ROC AUC", m.get("roc_auc")),
                ("PR AUC (average precision)", m.get("pr_auc")),
                ("Brier score", m.get("brier")),
                ("base rate", m.get("base_rate")),
                ("top-decile lift", m.get("top_decile_lift")),
                ("top-decile capture", m.get("top_decile_capture")),
                ("evaluation", m.get("evaluation")),
            ]
        )
    )
    has_rows = (
        con.execute(
            "select count(*) from propensity_validation_predictions where model_name = ?", [model]
        ).fetchone()[0]
        > 0
    )
    page.add('<div class="charts">')
    if has_rows:
        curve = queries.threshold_curve(con, model)
        pct = queries.percentiles(con, model)
        dec = queries.deciles(pct)
        page.chart(
            f"{model}-roc",
            charts.roc(f"{model}-roc", curve, m.get("roc_auc")),
            "True positive rate against false positive rate over every threshold.",
        )
        page.chart(
            f"{model}-pr",
            charts.precision_recall(f"{model}-pr", curve, m.get("pr_auc")),
            "Precision at each recall; the dashed line is what random targeting gets.",
        )
        page.chart(
            f"{model}-gains",
            charts.gains_chart(f"{model}-gains", queries.gains(pct)),
            "Share of all positives found when targeting the top x% by probability.",
        )
        page.chart(
            f"{model}-lift",
            charts.lift_chart(f"{model}-lift", dec),
            "Positive rate of each probability decile divided by the overall rate.",
        )
        page.chart(
            f"{model}-calibration",
            charts.calibration(f"{model}-calibration", dec),
            "Mean predicted probability against the observed rate, per decile; "
            "on the diagonal means probabilities can be taken at face value.",
        )
    else:
        page.add(
            "<p>The champion's validation rows are not stored (it was trained before they "
            "were recorded); retrain to draw its curves.</p>"
        )
    dist = queries.score_distribution(con, model)
    page.chart(
        f"{model}-scores",
        charts.score_histogram(
            f"{model}-scores", dist, f"Score distribution ({int(dist['customers'].sum()):,} scored)"
        )
        if not dist.empty
        else charts.empty(f"{model}-scores", "nobody was scored"),
        "Customers per score as of the run, coloured by bucket.",
    )
    factors = queries.top_factors(con, model)
    if not factors.empty:
        page.chart(
            f"{model}-factors",
            charts.factor_chart(f"{model}-factors", factors),
            "How often each feature is one of a customer's three most influential factors, "
            "and in which direction it pushes the probability.",
        )
    page.add("</div>")
    examples = queries.example_profiles(con, model)
    if not examples.empty:
        page.add("<h3>Example profiles</h3>")
        page.add('<div class="grid">')
        for row in examples.to_dict("records"):
            factors_rows = []
            for k in (1, 2, 3):
                code = row.get(f"factor_{k}_code")
                if code is None or (isinstance(code, float) and np.isnan(code)):
                    continue
                arrow = "▲" if row.get(f"factor_{k}_direction") == "increases" else "▼"
                factors_rows.append(
                    f"<tr><td>{_esc(code)}</td><td>{_num(row.get(f'factor_{k}_value'), 2)}</td>"
                    f"<td>{_esc(row.get(f'factor_{k}_importance'))}</td>"
                    f'<td class="{row.get(f"factor_{k}_direction")}">{arrow} '
                    f"{_esc(row.get(f'factor_{k}_direction'))}</td></tr>"
                )
            page.add(
                '<div class="profile">'
                f"<h4>{_esc(row['customer_id'])}</h4>"
                f"<p>probability <b>{row['probability']:.1%}</b> · score {int(row['score'])} · "
                f"percentile {int(row['percentile'])} · bucket {_esc(row['bucket'])}</p>"
                "<table><thead><tr><th>factor</th><th>value</th><th>importance</th>"
                f"<th>effect</th></tr></thead><tbody>{''.join(factors_rows)}</tbody></table>"
                "</div>"
            )
        page.add("</div>")
    page.end()


def _expected_cumulative(
    bg_params: dict[str, float], cohort: pd.DataFrame, days: pd.DatetimeIndex
) -> np.ndarray:
    """Sum over first-purchase cohorts of n_d * E[X(t - d)] (FHL 2005, eq. 7), per day."""
    from profile_enrichment.ml.clv import BetaGeoModel

    bg = BetaGeoModel(time_unit="days")
    bg.r_, bg.alpha_, bg.a_, bg.b_ = (float(bg_params[k]) for k in ("r", "alpha", "a", "b"))
    birth = pd.to_datetime(cohort["first_purchase_date"]).to_numpy()
    n = cohort["customers"].to_numpy(dtype=np.float64)
    # Ages take at most len(days) distinct values: evaluate E[X(t)] once per age.
    ages = np.arange(0, len(days) + 1, dtype=np.float64)
    curve = bg.expected_purchases_new(ages)
    start = days[0]
    offsets = ((birth - np.datetime64(start, "ns")) / np.timedelta64(1, "D")).astype(np.int64)
    out = np.zeros(len(days))
    for offset, count in zip(offsets, n, strict=True):
        idx = np.arange(len(days))
        age = idx - offset
        ok = age > 0
        out[ok] += count * curve[np.clip(age[ok], 0, ages.size - 1)]
    return out


def _clv(page: _Page, con: Any, reg: pd.DataFrame, as_of_date: str) -> None:
    page.section("clv", "Lifetime value")
    entry = queries.champion_entry(reg, "clv")
    if entry is None:
        page.add("<p>No lifetime-value model was published (see the overview).</p>")
        page.end()
        return
    p, m = entry["params"], entry["metrics"]
    summary = queries.clv_summary(con)
    currency = summary["currency"] or ""
    page.add('<div class="grid">')
    page.add(
        "<div><h3>Fitted parameters</h3>"
        + _kv(
            [
                ("BG/NBD r", p.get("r")),
                ("BG/NBD α", p.get("alpha")),
                ("BG/NBD a", p.get("a")),
                ("BG/NBD b", p.get("b")),
                ("Gamma-Gamma p", p.get("p")),
                ("Gamma-Gamma q", p.get("q")),
                ("Gamma-Gamma γ", p.get("gamma")),
                ("time unit", p.get("time_unit")),
            ]
        )
        + "</div>"
    )
    page.add(
        "<div><h3>Fit and holdout</h3>"
        + _kv(
            [
                ("version", entry["model_version"]),
                ("buyers fitted", m.get("n_customers")),
                ("log-likelihood per customer", m.get("log_likelihood_per_customer")),
                ("holdout snapshot", m.get("holdout_as_of_date")),
                ("holdout customers", m.get("holdout_customers")),
                (
                    "Spearman(CLV, realized revenue)",
                    m.get("holdout_spearman_clv_vs_future_revenue"),
                ),
                (f"predicted CLV, total ({currency})", summary["total"]),
                (f"predicted CLV, median ({currency})", summary["median"]),
                ("mean P(alive)", summary["mean_p_alive"]),
            ]
        )
        + "</div></div>"
    )
    page.add('<div class="charts">')
    as_of = pd.Timestamp(as_of_date)
    holdout_params = m.get("holdout_params")
    calibration_end = m.get("holdout_as_of_date") if holdout_params else None
    params = holdout_params or {k: p[k] for k in ("r", "alpha", "a", "b")}
    cohort = queries.clv_cohort(con, calibration_end)
    actual = queries.clv_tracking_actual(con, calibration_end)
    if not cohort.empty and not actual.empty:
        start = pd.Timestamp(cohort["first_purchase_date"].min())
        days = pd.date_range(start, as_of, freq="D")
        predicted = _expected_cumulative(params, cohort, days)
        page.chart(
            "clv-tracking",
            charts.clv_tracking(
                "clv-tracking",
                days,
                predicted,
                actual,
                pd.Timestamp(calibration_end) if calibration_end else None,
            ),
            "Cumulative repeat purchase days of the buyers acquired before the calibration end, "
            "actual against the BG/NBD expectation (after Fader, Hardie &amp; Lee 2005, Fig. 2)."
            + (
                " The model behind the dashed line was fitted on the calibration period only."
                if calibration_end
                else " In-sample: no holdout refit was recorded."
            ),
        )
    by_freq = m.get("holdout_by_frequency")
    if not by_freq:
        why = m.get("holdout_error") or "no matured snapshot with a holdout period"
        page.chart(
            "clv-holdout",
            charts.empty("clv-holdout", f"No holdout comparison: {why}"),
            "Calibration vs holdout by frequency (FHL 2005, Fig. 3) needs a refit on an older "
            "snapshot; it was not possible on this data.",
            empty=True,
        )
    else:
        page.chart(
            "clv-holdout",
            charts.clv_conditional(
                "clv-holdout",
                pd.DataFrame(by_freq),
                int(m.get("holdout_frequency_cap", 7)),
                int(m.get("holdout_days", 0)),
            ),
            "Customers grouped by repeat purchase days in the calibration period: mean repeat "
            "purchase days in the holdout, actual against predicted (FHL 2005, Fig. 3).",
        )
    grid = queries.clv_alive_grid(con)
    page.chart(
        "clv-alive",
        charts.clv_alive_heatmap("clv-alive", grid, 15),
        "Mean P(alive) of the buyers in each cell: frequent buyers whose last purchase is "
        "long before the as-of date (low recency, high frequency) are the likeliest to be gone.",
    )
    page.chart(
        "clv-distribution",
        charts.clv_distribution("clv-distribution", queries.clv_histogram(con)),
        f"Discounted expected spend over the horizon, per buyer ({currency}).",
    )
    page.add("</div>")
    page.end()


def _segments(page: _Page, con: Any) -> None:
    page.section("segments", "Segments")
    sizes = queries.segment_sizes(con)
    if sizes.empty:
        page.add("<p>No segments were assigned.</p>")
        page.end()
        return
    page.add('<div class="charts">')
    page.chart(
        "segment-sizes",
        charts.segment_sizes("segment-sizes", sizes),
        "Customers per segment (names are derived from the centroids).",
    )
    page.add("</div>")
    profiles = queries.segment_profiles(con)
    page.chart(
        "segment-profiles",
        charts.segment_profiles("segment-profiles", profiles, sizes),
        "Centroid profiles: each segment's mean of every segmentation feature, as a z-score "
        "against all customers (red above average, blue below).",
    )
    page.end()


def _affinity(page: _Page, con: Any) -> None:
    page.section("affinity", "Affinity")
    popularity = queries.category_popularity(con)
    if popularity.empty:
        page.add("<p>No category affinity was computed.</p>")
        page.end()
        return
    pairs = queries.category_coaffinity(con)
    order = queries.category_popularity(con, limit=12)["category_name"].tolist()
    page.add('<div class="charts">')
    page.chart(
        "category-popularity",
        charts.category_bars("category-popularity", popularity),
        "How many customers have each category in their top N, and how many rank it first.",
    )
    page.chart(
        "category-coaffinity",
        charts.coaffinity_heatmap("category-coaffinity", pairs, order),
        "Lift of two categories both being in a customer's top N: above 1 (red) they go "
        "together more often than chance, below 1 (blue) less.",
    )
    page.add("</div>")
    page.end()


def _drift(page: _Page, con: Any, threshold: float) -> None:
    page.section("drift", "Drift")
    drift = queries.drift(con)
    if drift.empty:
        page.add("<p>No drift was computed.</p>")
        page.end()
        return
    drifted = int(drift["is_drifted"].sum())
    page.add(
        f"<p>{drifted} of {len(drift)} features have a PSI above the threshold "
        f"{threshold:g} (highlighted): their population today differs from training.</p>"
    )
    page.add('<div class="grid">')
    shown = drift[drift["is_drifted"] | (np.arange(len(drift)) < 20)]
    page.chart(
        "drift-psi",
        charts.drift_bars("drift-psi", shown, threshold),
        f"PSI between training snapshots and today's scoring population: the {len(shown)} "
        f"highest of {len(drift)} model features (all are in the feature_drift table).",
    )
    page.add(
        _table(
            shown,
            {
                "feature": "feature",
                "psi": "PSI",
                "train_mean": "training mean",
                "score_mean": "scoring mean",
                "n_train": "training rows",
                "n_score": "scored rows",
            },
            row_class=lambda r: "drifted" if r["is_drifted"] else "",
        )
    )
    page.add("</div>")
    page.end()


def _export(page: _Page, export_dir: Path | None, as_of: str | None) -> None:
    page.section("export", "Export")
    manifests = []
    if export_dir is not None and export_dir.is_dir():
        for path in sorted(export_dir.glob("batch-*/manifest.json")):
            try:
                manifest = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if manifest.get("asOfDate") == as_of:
                manifests.append((path.parent, manifest))
    if not manifests:
        where = export_dir if export_dir is not None else "(no export folder given)"
        page.add(f"<p>No export batch for {_esc(as_of)} in {_esc(where)}.</p>")
        page.end()
        return
    rows, files, reasons = [], [], {}
    for folder, manifest in manifests:
        rows.append(
            {
                "batch": manifest.get("batchId"),
                "records": int(manifest.get("recordCount", 0)),
                "rejects": int(manifest.get("rejectCount", 0)),
                "files": len(manifest.get("files", [])),
                "bytes": int(manifest.get("totalBytes", 0)),
                "tenant": manifest.get("tenantId"),
                "versions": ", ".join(
                    f"{k} {v}" for k, v in sorted((manifest.get("modelVersions") or {}).items())
                ),
            }
        )
        for item in manifest.get("files", []):
            files.append(
                {
                    "batch": manifest.get("batchId", "")[:12],
                    "file": item.get("name"),
                    "records": int(item.get("records", 0)),
                    "bytes": int(item.get("bytes", 0)),
                }
            )
        rejects = folder / "rejects.jsonl"
        if rejects.is_file():
            with rejects.open() as handle:
                for line in handle:
                    try:
                        first = json.loads(line).get("reasons", ["unknown"])[0]
                    except (json.JSONDecodeError, AttributeError, IndexError):
                        first = "unreadable reject line"
                    key = str(first).split(":", 1)[0][:80]
                    reasons[key] = reasons.get(key, 0) + 1
    page.add(
        _table(
            pd.DataFrame(rows),
            {
                "batch": "batch",
                "records": "records",
                "rejects": "rejects",
                "files": "files",
                "bytes": "bytes",
                "tenant": "tenant",
                "versions": "model versions",
            },
        )
    )
    page.add("<h3>Files</h3>")
    page.add(
        _table(
            pd.DataFrame(files),
            {"batch": "batch", "file": "file", "records": "records", "bytes": "bytes"},
        )
    )
    if reasons:
        page.add("<h3>Rejects by reason</h3>")
        page.add(
            _table(
                pd.DataFrame(
                    sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])),
                    columns=["reason", "records"],
                ),
                {"reason": "reason", "records": "records"},
            )
        )
    else:
        page.add("<p>No record was rejected by the export's validation.</p>")
    page.end()


CSS = """
body{font-family:"DejaVu Sans","Liberation Sans",Arial,Helvetica,sans-serif;margin:0;
color:#222;background:#fafafa;font-size:14px}
header{background:#1f3b57;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.85}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 28px;z-index:1}
nav a{margin-right:16px;color:#1f5f99;text-decoration:none;font-weight:600}
main{padding:4px 20px 40px;max-width:1500px}
section{background:#fff;border:1px solid #e2e2e2;border-radius:6px;margin:18px 0;padding:6px 16px 16px}
h2{color:#1f3b57;border-bottom:2px solid #e8eef4;padding-bottom:4px}
h3{margin:16px 0 6px;font-size:15px} h4{margin:4px 0;font-size:13px;font-family:monospace}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border-bottom:1px solid #eee;padding:3px 10px;text-align:left;vertical-align:top}
thead th{background:#f1f4f7} table.kv th{font-weight:normal;color:#555;background:none}
td{font-variant-numeric:tabular-nums}
tr.warn td{background:#fff4e0} tr.drifted td{background:#fde2e0;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.charts{display:flex;flex-wrap:wrap;gap:14px}
figure.chart{margin:8px 0;padding:6px;border:1px solid #eee;border-radius:4px;background:#fff;
max-width:100%}
figure.chart svg{display:block;height:auto;max-width:100%}
figcaption{font-size:12px;color:#555;max-width:460px;margin-top:2px}
.profile{border:1px solid #e6e6e6;border-radius:4px;padding:6px 12px;min-width:300px}
td.increases{color:#c0392b} td.decreases{color:#1f5f99}
footer{color:#777;font-size:12px;padding:0 28px 24px}
"""


def build_report(
    warehouse: Path,
    out: Path,
    export_dir: Path | None = None,
    drift_threshold: float = 0.2,
) -> ReportResult:
    """Write the HTML report for ``warehouse`` to ``out`` (atomically) and return its facts."""
    import duckdb

    started = time.perf_counter()
    if not warehouse.is_file():
        raise UserError(
            f"warehouse not found: {warehouse}",
            hint="run `profile-enrichment run` first, or pass --warehouse FILE",
        )
    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.IOException as err:
        raise UserError(
            f"cannot open the warehouse {warehouse} read-only: {str(err).splitlines()[0]}",
            hint="wait for the running build to finish",
        ) from err
    try:
        missing = [t for t in REQUIRED_TABLES if not queries.table_exists(con, t)]
        if missing:
            raise UserError(
                f"{warehouse} has no {', '.join(missing)}: the pipeline was not built there",
                hint="run `profile-enrichment run` first",
            )
        info = queries.overview(con)
        reg = queries.registry(con)
        decisions = queries.model_decisions(reg, info["as_of_date"])
        page = _Page()
        _overview(page, info, decisions)
        for model in queries.PROPENSITY_MODELS:
            _propensity(page, con, reg, model)
        _clv(page, con, reg, info["as_of_date"])
        _segments(page, con)
        _affinity(page, con)
        _drift(page, con, drift_threshold)
        _export(page, export_dir, info["as_of_date"])
    finally:
        con.close()
    nav = "".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t in page.nav)
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Profile enrichment model report, as of {_esc(info['as_of_date'])}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>Profile enrichment: model report</h1>"
        f"<p>As of {_esc(info['as_of_date'])} · {info['profiles']:,} profiles · "
        f"warehouse {_esc(warehouse.name)}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(page.parts)}</main>"
        "<footer>Generated by <code>profile-enrichment report</code> from SQL aggregates over "
        "the warehouse. Self-contained: no script, font or image is loaded from anywhere."
        "</footer></body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(document, encoding="utf-8")
    tmp.replace(out)
    return ReportResult(out, len(document.encode()), page.charts, time.perf_counter() - started)
