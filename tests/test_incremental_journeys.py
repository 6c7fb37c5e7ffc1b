"""int_purchase_journeys is incremental: a nightly run recomputes only the identities with new
events (each over its whole history) and replaces their rows; a rebuilt staging rebuilds it.

Real dbt runs on one DuckDB file. Every row of the table is overwritten with revenue = -1
after the first build: rows a later run recomputed carry their real revenue again, rows it left
alone still say -1. That makes visible which identities a run rewrote, which equality with a
full refresh (tests/test_incremental.py) cannot show.

On DuckDB the post-hook builds the identities in hash buckets (macros/journeys/); these runs use
buckets of BUCKET_ROWS events, so the first build, the night and the rebuild each take several,
and the last test compares the bucketed rebuild with one query over the same files.
"""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from conftest import query, run_dbt, split_off_last_day

pytestmark = pytest.mark.dbt

LOOKBACK_DAYS = 3
BUCKET_ROWS = 1500  # accepted events per identity bucket: several buckets at this size


def _run(work: Path, raw: Path, as_of: str, **extra_vars) -> None:
    result = run_dbt(
        "build",
        "--select",
        "+int_purchase_journeys",
        "--indirect-selection",
        "cautious",
        "--target-path",
        str(work / "target"),
        "--log-path",
        str(work / "logs"),
        dbt_vars={
            "raw_dir": str(raw),
            "as_of_date": as_of,
            "ingestion_clock": as_of,
            "artifacts_dir": str(work / "artifacts"),
            "late_arrival_lookback_days": LOOKBACK_DAYS,
            "journey_rows_per_bucket": BUCKET_ROWS,
            **extra_vars,
        },
        env={"PE_TARGET": "dev", "PE_WAREHOUSE": str(work / "warehouse.duckdb")},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def _tamper(warehouse: Path) -> int:
    con = duckdb.connect(str(warehouse))
    try:
        con.execute("update int_purchase_journeys set revenue = -1")
        return con.execute("select count(*) from int_purchase_journeys").fetchall()[0][0]
    finally:
        con.close()


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("journeys")
    raw, later, last_day = split_off_last_day(work, customers=300, days=120, seed=9)
    as_of = str(last_day)  # the first night sees everything before the last day

    _run(work, raw, as_of)
    warehouse = work / "warehouse.duckdb"
    first_rows = _tamper(warehouse)
    (watermark,) = query(
        warehouse,
        f"select max(cast(event_at as date)) - {LOOKBACK_DAYS} from int_purchase_journeys",
    )[0]
    shutil.move(later, raw / "events" / "b.parquet")
    next_day = str(last_day + timedelta(days=1))
    _run(work, raw, next_day)
    after_night = query(
        warehouse,
        """
        select j.identity_key, j.event_id, j.revenue, a.revenue as accepted_revenue
        from int_purchase_journeys as j
        inner join int_events_accepted as a on j.event_id = a.event_id
        """,
    )
    changed = {
        key
        for (key,) in query(
            warehouse,
            f"select distinct identity_key from int_events_accepted"
            f" where event_date >= date '{watermark}'",
        )
    }
    new_file = {
        key
        for (key,) in query(
            warehouse,
            "select distinct identity_key from int_events_accepted"
            " where source_file like '%b.parquet'",
        )
    }
    (purchases,) = query(
        warehouse, "select count(*) from int_events_accepted where event_group = 'purchase'"
    )[0]
    journeys_rows = query(warehouse, "select count(*) from int_purchase_journeys")[0][0]

    _tamper(warehouse)
    _run(work, raw, next_day, rebuild_staging=True)
    after_rebuild = query(
        warehouse,
        "select count(*), count(*) filter (where revenue = -1) from int_purchase_journeys",
    )[0]
    one_query = work / "one_query"
    _run(one_query, raw, next_day, events_by_file=False)
    return {
        "work": work,
        "one_query": one_query,
        "first_rows": first_rows,
        "after_night": after_night,
        "changed": changed,
        "new_file": new_file,
        "purchases": purchases,
        "journeys_rows": journeys_rows,
        "after_rebuild": after_rebuild,
    }


def test_a_night_rewrites_exactly_the_identities_with_new_events(nights: dict) -> None:
    rows = nights["after_night"]
    assert nights["first_rows"] > 0
    rewritten = {key for key, _, revenue, _ in rows if revenue != -1}
    untouched = {key for key, _, revenue, _ in rows if revenue == -1}
    assert untouched, "every identity was recomputed: the run was not incremental"
    assert rewritten, "no identity was recomputed"
    assert not rewritten & untouched  # an identity is recomputed whole, never in part
    # recomputed: every identity with an accepted event at or after the watermark, and only those
    assert rewritten == {key for key, *_ in rows} & nights["changed"]
    assert nights["new_file"] <= nights["changed"]
    # recomputed rows carry the real values again
    for key, event_id, revenue, accepted_revenue in rows:
        if key in rewritten:
            assert revenue == accepted_revenue, (key, event_id)


def test_a_night_keeps_one_row_per_accepted_purchase(nights: dict) -> None:
    # the new day's purchases were added, no purchase lost or doubled
    assert nights["journeys_rows"] == nights["purchases"] > nights["first_rows"]


def test_a_rebuilt_staging_rebuilds_every_journey(nights: dict) -> None:
    total, tampered = nights["after_rebuild"]
    assert total == nights["purchases"]
    assert tampered == 0


def test_identity_buckets_give_the_rows_of_one_query(nights: dict) -> None:
    """The bucketed rebuild (after the tampering, so every row was written again) equals one
    query over the same files; the buckets really were several, and the model's own query on
    DuckDB selects nothing."""
    log = (nights["work"] / "logs" / "dbt.log").read_text()
    buckets = {int(n) for n in re.findall(r"hash\(identity_key\) % (\d+) = ", log)}
    assert buckets and min(buckets) > 1, buckets
    compiled = (
        nights["work"] / "target/compiled/profile_enrichment/models/intermediate/journeys"
    ) / "int_purchase_journeys.sql"
    assert "where false" in compiled.read_text()
    con = duckdb.connect()
    try:
        con.execute(f"attach '{nights['work'] / 'warehouse.duckdb'}' as bucketed (read_only)")
        con.execute(f"attach '{nights['one_query'] / 'warehouse.duckdb'}' as one (read_only)")
        (rows,) = con.execute("select count(*) from one.int_purchase_journeys").fetchone()
        differences = con.execute(
            "(select * from bucketed.int_purchase_journeys except all"
            " select * from one.int_purchase_journeys) union all"
            " (select * from one.int_purchase_journeys except all"
            " select * from bucketed.int_purchase_journeys)"
        ).fetchall()
    finally:
        con.close()
    assert rows == nights["purchases"] > 0 and differences == []
