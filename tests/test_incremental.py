"""Incremental equals full refresh: nightly runs with late data end where one rebuild ends.

A generated history is split into one Parquet file per UTC day. A persistent warehouse then
gets an initial load of the first weeks and one nightly `dbt build` per following day, as a
scheduler would run it, with as_of_date = that day + 1. On some nights a few LATE events
arrive: events taken from the data of 1-3 days back (within var late_arrival_lookback_days=3)
and withheld from their own day's file. One of them is a login that first links an anonymous
ECID to a CRMID the day before a snapshot date, so a snapshot already written must be
re-stitched. At the end, a single --full-refresh on the very same files into another
warehouse must hold exactly the same rows in every incremental model and every feature mart.

Speed: every dbt invocation costs seconds, most of it parsing. All runs therefore happen in
ONE child process that parses once and reuses the manifest (dbtRunner(manifest=...)); the
child exits before this process opens the warehouse files, so no lock is held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from conftest import PROJECT_DIR, run_cli

FIRST_DAY = date(2024, 1, 1)
INITIAL_DAYS = 62  # 2024-01-01 .. 2024-03-02 in the initial load (as of 2024-03-03)
NIGHTLY_RUNS = 31  # 2024-03-03 .. 2024-04-02, one run each (as of the next day)
LOOKBACK_DAYS = 3
SNAPSHOT_DATE = date(2024, 4, 1)  # a snapshot written on 2024-03-31's run, then hit by late data
# Late deliveries: the night they arrive -> how many days back their events happened.
LATE_DELIVERIES = {
    date(2024, 3, 5): [1, 2],
    date(2024, 3, 12): [3],
    date(2024, 3, 20): [1, 2],
    date(2024, 3, 27): [3],
    date(2024, 4, 1): [1, 2, 3],
    date(2024, 4, 2): [1],
}
LATE_LINK_DAY = SNAPSHOT_DATE - timedelta(days=1)  # the login happens on 2024-03-31 ...
LATE_LINK_DELIVERY = SNAPSHOT_DATE + timedelta(days=1)  # ... and arrives on 2024-04-02
SELECTION = [
    "--select",
    "+customer_features",
    "+customer_feature_snapshots",
    "+customer_labels",
    "+customer_category_affinity",
]
# The nightly runs build models only (data tests cost seconds each night); the final full
# refresh runs the data tests too. Tests whose parents are not all selected are skipped
# (--indirect-selection cautious): see the report on quarantine_reasons.
NIGHTLY = ["build", *SELECTION, "--exclude-resource-type", "test", "unit_test"]
FULL = ["build", *SELECTION, "--full-refresh", "--indirect-selection", "cautious"]
COMPARED = [
    "int_identity_daily_activity",
    "int_identity_category_daily",
    "customer_features",
    "customer_feature_snapshots",
    "customer_labels",
    "customer_category_affinity",
]

# Runs a plan of dbt invocations in one process (see the module docstring).
_DRIVER = r"""
import json, os, shutil, sys, time
from dbt.cli.main import dbtRunner

plan = json.loads(open(sys.argv[1]).read())
os.chdir(plan["project_dir"])
common = plan["common_args"]
# Relations carry the database name (the file stem) from parse time: every warehouse of a
# plan must have the same file name (in different folders).
os.environ["PE_WAREHOUSE"] = plan["steps"][0]["warehouse"]
parsed = dbtRunner().invoke(["parse", *common, "--vars", json.dumps(plan["parse_vars"])])
if not parsed.success:
    print(json.dumps({"failed_step": "parse", "errors": [repr(parsed.exception)]}))
    sys.exit(1)
runner = dbtRunner(manifest=parsed.result)
timings = []
for number, step in enumerate(plan["steps"]):
    for source, target in step["copy"]:
        shutil.copyfile(source, target)
    os.environ["PE_WAREHOUSE"] = step["warehouse"]
    started = time.perf_counter()
    result = runner.invoke([*step["args"], *common, "--vars", json.dumps(step["vars"])])
    timings.append([step["label"], round(time.perf_counter() - started, 2)])
    if not result.success:
        errors = [repr(result.exception)] if result.exception else []
        for node in getattr(result.result, "results", None) or []:
            if str(node.status) in ("error", "fail"):
                errors.append(f"{node.node.unique_id}: {node.message}")
        print(json.dumps({"failed_step": step["label"], "errors": errors, "timings": timings}))
        sys.exit(1)
print(json.dumps({"timings": timings}))
"""


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PE_")}
    env.update(
        DBT_PROFILES_DIR=str(PROJECT_DIR),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        DO_NOT_TRACK="1",
        PE_TARGET="dev",
    )
    return env


def run_dbt_plan(plan: dict, work: Path, timeout: int = 600) -> dict:
    """Run the plan's dbt invocations in one child process; fail the test on the first error."""
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps(plan, indent=1))
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(plan_file)],
        cwd=PROJECT_DIR,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    try:
        report = json.loads(last)
    except json.JSONDecodeError:
        report = {}
    assert proc.returncode == 0, (
        f"dbt plan failed at step {report.get('failed_step')!r}:\n"
        + "\n".join(report.get("errors", []))[-6000:]
        + "\n--- stdout ---\n"
        + proc.stdout[-4000:]
        + "\n--- stderr ---\n"
        + proc.stderr[-4000:]
    )
    return report


def split_by_day(generated: Path, days_dir: Path) -> dict[date, Path]:
    """One Parquet file per UTC day of `timestamp` (nested columns kept as they are), minus the
    events withheld as late; the late ones go to late=<delivery night>.parquet files."""
    days_dir.mkdir(parents=True)
    con = duckdb.connect()
    try:
        con.sql("set TimeZone = 'UTC'")
        con.sql(
            f"""
            create table events as
            select *, cast(cast("timestamp" as timestamptz) as date) as event_day
            from read_parquet('{generated}/events/*.parquet')
            """
        )
        # Late events: per (delivery night, source day) the day's first purchase plus three
        # other events, in a stable pseudo-random order.
        late_rows = []
        for delivered, backs in LATE_DELIVERIES.items():
            for back in backs:
                late_rows.append((delivered, delivered - timedelta(days=back)))
        con.execute("create table late_plan (delivered date, event_day date)")
        con.executemany("insert into late_plan values (?, ?)", late_rows)
        con.sql(
            """
            create table late as
            with ranked as (
                select
                    late_plan.delivered,
                    events._id,
                    events.eventType = 'commerce.purchases' as is_purchase,
                    row_number() over (
                        partition by
                            late_plan.delivered,
                            events.event_day,
                            events.eventType = 'commerce.purchases'
                        order by md5(events._id)
                    ) as pick
                from events
                inner join late_plan on events.event_day = late_plan.event_day
            )
            select delivered, _id from ranked
            where (is_purchase and pick = 1) or (not is_purchase and pick <= 3)
            """
        )
        # The late login: an anonymous ECID that never logged in before the snapshot date is
        # seen with a CRMID on LATE_LINK_DAY, delivered two days late. A copy of one of the
        # ECID's own events (new _id), with the CRMID added as the primary identity.
        anonymous = con.sql(
            f"""
            with ecids as (
                select
                    identityMap['ECID'][1].id as ecid,
                    bool_or(identityMap['CRMID'] is not null
                        or identityMap['Email_LC_SHA256'] is not null) as ever_linked,
                    min(event_day) as first_day,
                    max(event_day) as last_day
                from events
                where identityMap['ECID'] is not null
                group by 1
            )
            select ecid from ecids
            where not ever_linked and first_day < date '{LATE_LINK_DAY}' - 7
            order by md5(ecid)
            limit 1
            """
        ).fetchall()[0]
        assert anonymous, "the generated data has no anonymous ECID to link late"
        person = con.sql(
            f"""
            select identityMap['CRMID'][1].id from events
            where identityMap['CRMID'] is not null and event_day < date '{LATE_LINK_DAY}'
            group by 1 order by md5(identityMap['CRMID'][1].id) limit 1
            """
        ).fetchall()[0]
        map_type = con.sql("select any_value(typeof(identityMap)) from events").fetchall()[0][0]
        con.execute(
            f"""
            create table late_link as
            select * replace (
                md5(_id || ':late-login') as _id,
                '{LATE_LINK_DAY}T12:00:00.000Z' as "timestamp",
                'web.webpagedetails.pageViews' as eventType,
                cast(map {{
                    'CRMID': [{{'id': ?, 'authenticatedState': 'authenticated', 'primary': true}}],
                    'ECID': [{{'id': ?, 'authenticatedState': 'ambiguous', 'primary': false}}]
                }} as {map_type}) as identityMap,
                case when false then commerce end as commerce,
                case when false then productListItems end as productListItems
            )
            from events
            where identityMap['ECID'][1].id = ? and identityMap['CRMID'] is null
            order by "timestamp"
            limit 1
            """,
            [person[0], anonymous[0], anonymous[0]],
        )
        files: dict[date, Path] = {}
        last_day = FIRST_DAY + timedelta(days=INITIAL_DAYS + NIGHTLY_RUNS - 1)
        day = FIRST_DAY
        while day <= last_day:
            path = days_dir / f"day={day}.parquet"
            con.sql(
                f"""
                copy (
                    select * exclude (event_day) from events
                    where event_day = date '{day}' and _id not in (select _id from late)
                    order by "timestamp", _id
                ) to '{path}' (format parquet)
                """
            )
            files[day] = path
            day += timedelta(days=1)
        for delivered in LATE_DELIVERIES:
            path = days_dir / f"late={delivered}.parquet"
            link = "union all by name select * from late_link" if (
                delivered == LATE_LINK_DELIVERY
            ) else ""
            con.sql(
                f"""
                copy (
                    select * exclude (event_day) from events
                    where _id in (select _id from late where delivered = date '{delivered}')
                    {link}
                    order by "timestamp", _id
                ) to '{path}' (format parquet)
                """
            )
        return files
    finally:
        con.close()


@pytest.mark.dbt
def test_nightly_incremental_runs_equal_one_full_refresh(tmp_path: Path) -> None:
    started = time.perf_counter()
    generated = tmp_path / "generated"
    result = run_cli(
        "generate",
        "--customers",
        "300",
        "--days",
        str(INITIAL_DAYS + NIGHTLY_RUNS + 2),
        "--seed",
        "23",
        "--out",
        str(generated),
    )
    assert result.returncode == 0, result.stderr
    days = split_by_day(generated, tmp_path / "days")
    raw = tmp_path / "raw"
    (raw / "events").mkdir(parents=True)
    landed = raw / "events"
    # Same file name in two folders: the manifest parsed once names the database by its stem.
    incremental = tmp_path / "incremental" / "warehouse.duckdb"
    full = tmp_path / "full" / "warehouse.duckdb"
    incremental.parent.mkdir()
    full.parent.mkdir()

    def dbt_vars(as_of: date) -> dict:
        return {
            "raw_dir": str(raw),
            "raw_profiles": False,
            "as_of_date": as_of.isoformat(),
            "late_arrival_lookback_days": LOOKBACK_DAYS,
            "snapshot_months": 18,
            "artifacts_dir": str(tmp_path / "artifacts"),
        }

    def copies(night: date) -> list[list[str]]:
        out = [[str(days[night]), str(landed / days[night].name)]]
        late = days[night].parent / f"late={night}.parquet"
        if night in LATE_DELIVERIES:
            out.append([str(late), str(landed / late.name)])
        return out

    initial_end = FIRST_DAY + timedelta(days=INITIAL_DAYS)  # exclusive
    steps = [
        {
            "label": f"initial load as of {initial_end}",
            "copy": [
                [str(days[d]), str(landed / days[d].name)]
                for d in sorted(days)
                if d < initial_end
            ],
            "warehouse": str(incremental),
            "args": NIGHTLY,
            "vars": dbt_vars(initial_end),
        }
    ]
    for offset in range(NIGHTLY_RUNS):
        night = initial_end + timedelta(days=offset)
        steps.append(
            {
                "label": f"night {night} as of {night + timedelta(days=1)}",
                "copy": copies(night),
                "warehouse": str(incremental),
                "args": NIGHTLY,
                "vars": dbt_vars(night + timedelta(days=1)),
            }
        )
    final_as_of = initial_end + timedelta(days=NIGHTLY_RUNS)
    steps.append(
        {
            "label": f"full refresh as of {final_as_of}",
            "copy": [],
            "warehouse": str(full),
            "args": FULL,
            "vars": dbt_vars(final_as_of),
        }
    )
    plan = {
        "project_dir": str(PROJECT_DIR),
        "common_args": [
            "--target-path",
            str(tmp_path / "target"),
            "--log-path",
            str(tmp_path / "logs"),
            "--quiet",
        ],
        "parse_vars": dbt_vars(final_as_of),
        "steps": steps,
    }
    report = run_dbt_plan(plan, tmp_path)
    # Every file was landed in the incremental raw folder exactly once: the full refresh read
    # the same files.
    assert sorted(p.name for p in landed.iterdir()) == sorted(
        p.name for p in (tmp_path / "days").iterdir()
    )

    con = duckdb.connect()
    try:
        con.sql(f"attach '{incremental}' as incremental (read_only)")
        con.sql(f"attach '{full}' as full_refresh (read_only)")
        # The scenario really happened: late rows and the late link are in the data ...
        assert con.sql(
            "select count(*) from full_refresh.int_events_accepted where source_file like '%late=%'"
        ).fetchall()[0][0] > 20
        linked = con.sql(
            f"""
            select count(*) from full_refresh.int_identity_links
            where linked_date = date '{LATE_LINK_DAY}'
                and alias_key in (
                    select identity_key from full_refresh.int_identity_daily_activity
                    where activity_date < date '{LATE_LINK_DAY}')
            """
        ).fetchall()[0][0]
        assert linked >= 1, "the late login did not link a previously anonymous ECID"
        # ... the snapshot it hits exists, and the run covered the days it should.
        assert con.sql(
            f"""
            select count(*) from incremental.customer_feature_snapshots
            where as_of_date = date '{SNAPSHOT_DATE}'
            """
        ).fetchall()[0][0] > 50
        assert con.sql(
            "select max(activity_date) from incremental.int_identity_daily_activity"
        ).fetchall()[0][0] == final_as_of - timedelta(days=1)

        differences = {}
        for model in COMPARED:
            counts = con.sql(
                f"""
                select
                    (select count(*) from incremental.{model}),
                    (select count(*) from full_refresh.{model}),
                    (select count(*) from (
                        select * from incremental.{model}
                        except all
                        select * from full_refresh.{model})),
                    (select count(*) from (
                        select * from full_refresh.{model}
                        except all
                        select * from incremental.{model}))
                """
            ).fetchall()[0]
            if counts[2] or counts[3]:
                sample = con.sql(
                    f"""
                    (select 'incremental only' as side, * from (
                        select * from incremental.{model}
                        except all select * from full_refresh.{model}) limit 3)
                    union all
                    (select 'full only' as side, * from (
                        select * from full_refresh.{model}
                        except all select * from incremental.{model}) limit 3)
                    """
                ).fetchall()
                differences[model] = {
                    "rows (incremental, full)": counts[:2],
                    "only incremental": counts[2],
                    "only full": counts[3],
                    "sample": [row[:6] for row in sample],
                }
            else:
                assert counts[0] > 0, f"{model} is empty"
    finally:
        con.close()
    elapsed = time.perf_counter() - started
    assert not differences, (
        "incremental runs differ from a full refresh:\n"
        + json.dumps(differences, indent=1, default=str)
        + f"\n(dbt timings: {report.get('timings')}, total {elapsed:.0f}s)"
    )
