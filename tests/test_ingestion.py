"""Ingestion end to end: identity stitching, as-of visibility, the accounting on generated data.

Malformed records and their reason codes are in test_bad_input.py (the corpus in
tests/fixtures/bad_input/), which builds with `dbt_build` from here.

Each scenario is one real `dbt build` on a small hand-written JSON Lines folder, into a DuckDB
file in pytest's tmp folder, with the ingestion clock pinned (so '2099' is in the future and the
results do not depend on today). dbt's target and log folders go to tmp as well, so these runs
never clobber target/run_results.json of a run going on in the project folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pytest

from conftest import CliResult, query, run_dbt

pytestmark = pytest.mark.dbt

CLOCK = "2030-01-01"


@dataclass
class Build:
    """One dbt build: its result, the warehouse it wrote and each node's status."""

    result: CliResult
    warehouse: Path
    statuses: dict[str, str]

    def failed_nodes(self) -> dict[str, str]:
        return {k: v for k, v in self.statuses.items() if v not in ("success", "pass")}


def dbt_build(work: Path, raw: Path, select: str, **extra_vars: object) -> Build:
    """`dbt build --select SELECT` on RAW (JSON Lines, no profiles) into work/warehouse.duckdb."""
    warehouse = work / "warehouse.duckdb"
    dbt_vars = {
        "raw_dir": str(raw),
        "raw_format": "jsonl",
        "raw_profiles": False,
        "ingestion_clock": CLOCK,
        "artifacts_dir": str(work / "artifacts"),
        **extra_vars,
    }
    result = run_dbt(
        "build",
        "--target",
        "dev",
        "--select",
        select,
        # only tests whose parents are all built: `+customer_features` must not drag in the
        # accounting test (it refs rejected_events) or tests of the quarantine_reasons seed
        "--indirect-selection",
        "buildable",
        "--target-path",
        str(work / "target"),
        "--log-path",
        str(work / "logs"),
        dbt_vars=dbt_vars,
        env={"PE_WAREHOUSE": str(warehouse)},
    )
    results = work / "target" / "run_results.json"
    statuses = {}
    if results.exists():
        statuses = {r["unique_id"]: r["status"] for r in json.loads(results.read_text())["results"]}
    return Build(result, warehouse, statuses)


# ----------------------------------------------------------------------------------------------
# identity stitching and as-of visibility
# ----------------------------------------------------------------------------------------------
AS_OF = "2024-03-10"


def event(event_id: str, timestamp: str, identities: dict[str, str], total: float | None = None):
    """An XDM event: a page view, or a purchase when `total` is given. First identity is primary."""
    identity_map = {
        namespace: [{"id": value, "primary": number == 0}]
        for number, (namespace, value) in enumerate(identities.items())
    }
    record = {
        "_id": event_id,
        "timestamp": timestamp,
        "eventType": "web.webpagedetails.pageViews" if total is None else "commerce.purchases",
        "identityMap": identity_map,
    }
    if total is not None:
        record["commerce"] = {
            "order": {"purchaseID": f"O-{event_id}", "priceTotal": total, "currencyCode": "USD"}
        }
    return record


# D's hashed e-mail: a real SHA-256 digest (the privacy guard refuses anything else there)
H_D = hashlib.sha256(b"d@example.invalid").hexdigest()
STITCHING_EVENTS = [
    # A: anonymous ECID, then a purchase with the CRMID at 01:00+02:00 on 03-05 = 03-04 UTC.
    event("a1", "2024-03-01T12:00:00Z", {"ECID": "E-A"}),
    event("a2", "2024-03-03T12:00:00Z", {"ECID": "E-A"}),
    event("a3", "2024-03-05T01:00:00+02:00", {"CRMID": "A-1", "ECID": "E-A"}, total=40.0),
    # B: known person, anonymous ECID, linked ON the as-of date, and an order after it.
    event("b1", "2024-03-02T12:00:00Z", {"CRMID": "B-1"}),
    event("b2", "2024-03-06T12:00:00Z", {"ECID": "E-B"}),
    event("b3", "2024-03-10T08:00:00Z", {"CRMID": "B-1", "ECID": "E-B"}, total=60.0),
    event("b4", "2024-03-25T12:00:00Z", {"CRMID": "B-1"}, total=70.0),
    # C: 23:30 at -05:00 on 03-09 is 04:30 UTC on 03-10, the as-of date: not visible yet.
    event("c1", "2024-03-09T23:30:00-05:00", {"ECID": "E-C"}),
    # D: ECID seen with the email first, the email seen with the CRMID later.
    event("d1", "2024-03-02T12:00:00Z", {"Email_LC_SHA256": H_D, "ECID": "E-D"}),
    event("d2", "2024-03-04T12:00:00Z", {"CRMID": "D-1", "Email_LC_SHA256": H_D}),
    event("d3", "2024-03-06T12:00:00Z", {"ECID": "E-D"}),
]


@pytest.fixture(scope="module")
def stitched(tmp_path_factory: pytest.TempPathFactory) -> Build:
    work = tmp_path_factory.mktemp("stitching")
    events = work / "raw" / "events"
    events.mkdir(parents=True)
    lines = [json.dumps(record) for record in STITCHING_EVENTS]
    (events / "stitching.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    build = dbt_build(work, work / "raw", "+customer_features", as_of_date=AS_OF)
    assert build.result.returncode == 0, build.result.stdout[-3000:]
    return build


def features(build: Build) -> dict[str, tuple]:
    rows = query(
        build.warehouse,
        """
        select customer_id, as_of_date, active_days_total, orders_total, revenue_total
        from customer_features
        """,
    )
    return {row[0]: row[1:] for row in rows}


def test_events_after_the_as_of_date_are_accepted(stitched: Build) -> None:
    rows = query(
        stitched.warehouse,
        "select event_id, is_accepted from int_events_validated where event_id in ('b3', 'b4')",
    )
    assert sorted(rows) == [("b3", True), ("b4", True)]
    total = query(stitched.warehouse, "select count(*) from int_events_accepted")
    assert total == [(len(STITCHING_EVENTS),)]


def test_link_starts_on_the_first_utc_day_seen_together(stitched: Build) -> None:
    rows = query(
        stitched.warehouse,
        """
        select alias_key, person_key, linked_date
        from int_identity_links
        where alias_key in ('ECID:E-A', 'ECID:E-B')
        order by alias_key
        """,
    )
    assert rows == [
        ("ECID:E-A", "CRMID:A-1", date(2024, 3, 4)),
        ("ECID:E-B", "CRMID:B-1", date(2024, 3, 10)),
    ]
    a3 = query(stitched.warehouse, "select event_at from int_events_accepted where event_id = 'a3'")
    assert a3 == [(datetime(2024, 3, 4, 23),)]


def test_features_apply_only_links_known_before_the_as_of_date(stitched: Build) -> None:
    customers = features(stitched)
    as_of = date.fromisoformat(AS_OF)
    # A: linked on 03-04 < as-of: the anonymous days count for the person, no ECID row.
    assert customers["CRMID:A-1"] == (as_of, 3, 1, 40.0)
    assert "ECID:E-A" not in customers
    # B: linked on the as-of date itself: the ECID stays a separate (anonymous) customer, and the
    # orders on and after the as-of date are not visible.
    assert customers["CRMID:B-1"] == (as_of, 1, 0, 0.0)
    assert customers["ECID:E-B"] == (as_of, 1, 0, 0.0)


def test_utc_day_decides_visibility(stitched: Build) -> None:
    """c1 is 03-09 in its own time zone but 03-10 (the as-of date) in UTC: not visible."""
    assert "ECID:E-C" not in features(stitched)


def test_alias_of_an_alias_is_stitched_to_the_person(stitched: Build) -> None:
    """E-D was seen with the email H_D (03-02), H_D with the CRMID D-1 (03-04): as of 03-10 all
    three days belong to CRMID:D-1. Links are not followed transitively today, so d3 lands on a
    separate customer `Email_LC_SHA256:<H_D>` and the person is split in two."""
    customers = features(stitched)
    assert customers["CRMID:D-1"] == (date.fromisoformat(AS_OF), 3, 0, 0.0)
    assert not {key for key in customers if key.endswith(f":{H_D}") or key.endswith(":E-D")}


# ----------------------------------------------------------------------------------------------
# the generated data set
# ----------------------------------------------------------------------------------------------
def test_generated_data_accounting(built_warehouse: Path) -> None:
    ((read, accepted, rejected, validated_accepted),) = query(
        built_warehouse,
        """
        select
            (select count(*) from stg_aep__experience_events),
            (select count(*) from int_events_accepted),
            (select count(*) from rejected_events),
            (select count(*) from int_events_validated where is_accepted)
        """,
    )
    assert read > 0 and accepted > 0
    assert read == accepted + rejected
    assert accepted == validated_accepted
    (overlap,) = query(
        built_warehouse,
        """
        select count(*) from int_events_accepted
        inner join rejected_events using (record_id)
        """,
    )[0]
    assert overlap == 0
