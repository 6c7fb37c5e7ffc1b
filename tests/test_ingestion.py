"""Ingestion end to end: quarantine reason codes, accounting, UTC timestamps, identity stitching.

Each scenario is one real `dbt build` on a small hand-written JSON Lines folder, into a DuckDB
file in pytest's tmp folder, with the ingestion clock pinned (so '2099' is in the future and the
results do not depend on today). dbt's target and log folders go to tmp as well, so these runs
never clobber target/run_results.json of a run going on in the project folder.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pytest

from conftest import CliResult, query, run_cli, run_dbt

pytestmark = pytest.mark.dbt

MALFORMED = Path(__file__).parent / "fixtures" / "malformed_events"
CLOCK = "2030-01-01"
ACCEPTED = None  # expected reason_code of an accepted record

# (file, line) -> (_id, expected reason_code). Blank lines (01: 3 and 35; 02: 4) are absent on
# purpose: they are not records. Lines 36-39 of 01 have their own tests below.
EXPECTED: dict[tuple[str, int], tuple[str | None, str | None]] = {
    ("01_events.jsonl", 1): ("ok-page", ACCEPTED),
    ("01_events.jsonl", 2): ("ok-purchase", ACCEPTED),
    ("01_events.jsonl", 4): ("ok-extra-fields", ACCEPTED),
    ("01_events.jsonl", 5): ("ok-offset", ACCEPTED),
    ("01_events.jsonl", 6): (None, "invalid_json"),
    ("01_events.jsonl", 7): (None, "missing_event_id"),
    ("01_events.jsonl", 8): ("   ", "missing_event_id"),
    ("01_events.jsonl", 9): ("bad-type-price", "invalid_field_type"),
    ("01_events.jsonl", 10): ("bad-type-event-type", "invalid_field_type"),
    ("01_events.jsonl", 11): ("bad-type-quantity", "invalid_field_type"),
    ("01_events.jsonl", 12): ("no-timestamp", "missing_timestamp"),
    ("01_events.jsonl", 13): ("empty-timestamp", "missing_timestamp"),
    ("01_events.jsonl", 14): ("bad-timestamp", "unparseable_timestamp"),
    ("01_events.jsonl", 15): ("epoch-timestamp", "timestamp_before_min_date"),
    ("01_events.jsonl", 16): ("future-timestamp", "future_timestamp"),
    ("01_events.jsonl", 17): ("no-event-type", "missing_event_type"),
    ("01_events.jsonl", 18): ("blank-event-type", "missing_event_type"),
    ("01_events.jsonl", 19): ("unknown-event-type", "unknown_event_type"),
    ("01_events.jsonl", 20): ("no-identity-map", "missing_identity_map"),
    ("01_events.jsonl", 21): ("array-identity-map", "missing_identity_map"),
    ("01_events.jsonl", 22): ("unknown-namespace", "no_usable_identity"),
    ("01_events.jsonl", 23): ("blank-identity", "no_usable_identity"),
    ("01_events.jsonl", 24): ("two-primaries", "multiple_primary_identities"),
    ("01_events.jsonl", 25): ("negative-total", "negative_amount"),
    ("01_events.jsonl", 26): ("negative-line", "negative_amount"),
    ("01_events.jsonl", 27): ("negative-quantity", "negative_quantity"),
    ("01_events.jsonl", 28): ("eur-order", "unsupported_currency"),
    ("01_events.jsonl", 29): ("too-large", "record_too_large"),
    ("01_events.jsonl", 30): ("two-failures", "future_timestamp"),
    ("01_events.jsonl", 31): ("dup-in-file", ACCEPTED),
    ("01_events.jsonl", 32): ("dup-in-file", "duplicate_event_id"),
    ("01_events.jsonl", 33): ("dup-across-files", ACCEPTED),
    ("01_events.jsonl", 34): ("dup-first-copy-bad", "unknown_event_type"),
    ("02_events.jsonl", 1): ("dup-across-files", "duplicate_event_id"),
    ("02_events.jsonl", 2): ("dup-first-copy-bad", ACCEPTED),
    ("02_events.jsonl", 3): ("dup-in-second-file", ACCEPTED),
    ("02_events.jsonl", 5): ("dup-in-second-file", "duplicate_event_id"),
    ("02_events.jsonl", 6): (None, "invalid_json"),
}
SINGLED_OUT = {
    36: ("null-event-type", "missing_event_type"),
    37: ("too-large-multibyte", "record_too_large"),
    38: ("date-only-timestamp", "unparseable_timestamp"),
    39: ("no-offset-timestamp", "unparseable_timestamp"),
}


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


def nonblank_lines(path: Path) -> list[int]:
    """1-based numbers of the lines that hold a record (not empty, not only spaces)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [number for number, text in enumerate(lines, start=1) if text.strip()]


# ----------------------------------------------------------------------------------------------
# malformed events
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def malformed(tmp_path_factory: pytest.TempPathFactory) -> Build:
    work = tmp_path_factory.mktemp("malformed")
    return dbt_build(
        work,
        MALFORMED,
        # quarantine_reasons: only tests ref it, so `+rejected_events` alone does not build it
        "+rejected_events +int_events_accepted quarantine_reasons",
        max_event_bytes=1024,
    )


@pytest.fixture(scope="module")
def validated(malformed: Build) -> dict[tuple[str, int], tuple]:
    """int_events_validated keyed by (file, line), lines numbered from the fixture files.

    Rows are matched to lines by order within each file, so this does not rely on source_row
    (which test_jsonl_source_row_is_the_line_in_its_file checks on its own).
    """
    rows = query(
        malformed.warehouse,
        """
        select source_file, event_id, reason_code, reason_codes, is_accepted, event_at, record_id
        from int_events_validated
        order by source_file, source_row
        """,
    )
    by_line: dict[tuple[str, int], tuple] = {}
    for path in sorted((MALFORMED / "events").glob("*.jsonl")):
        file_rows = [r for r in rows if Path(r[0]).name == path.name]
        numbers = nonblank_lines(path)
        assert len(file_rows) == len(numbers), (path.name, len(file_rows), numbers)
        by_line.update({(path.name, n): row[1:] for n, row in zip(numbers, file_rows, strict=True)})
    return by_line


def test_malformed_build_passes_every_dbt_test(malformed: Build) -> None:
    assert malformed.statuses, malformed.result.stdout[-3000:] + malformed.result.stderr[-3000:]
    assert malformed.statuses.get("test.profile_enrichment.assert_every_record_accounted_once") == (
        "pass"
    )
    assert malformed.failed_nodes() == {}
    assert malformed.result.returncode == 0


def test_fixture_covers_every_reason_code(project_dir: Path) -> None:
    with (project_dir / "seeds" / "quarantine_reasons.csv").open(encoding="utf-8") as fh:
        seed_codes = {row["reason_code"] for row in csv.DictReader(fh)}
    assert {reason for _, reason in EXPECTED.values()} - {ACCEPTED} == seed_codes


def test_each_record_gets_its_reason_code(validated: dict) -> None:
    for (file, line), (event_id, _) in EXPECTED.items():  # the table matches the fixture
        text = (MALFORMED / "events" / file).read_text(encoding="utf-8").split("\n")[line - 1]
        parsed = json.loads(text) if event_id is not None else None
        assert parsed is None or parsed.get("_id") == event_id, (file, line)
    actual = {
        key: (row[0], row[1], row[3]) for key, row in validated.items() if key[1] not in SINGLED_OUT
    }
    expected = {
        key: (event_id, reason, reason is ACCEPTED) for key, (event_id, reason) in EXPECTED.items()
    }
    assert actual == expected


def test_all_failing_checks_are_listed_in_precedence_order(validated: dict) -> None:
    assert validated[("01_events.jsonl", 30)][2] == "future_timestamp,unknown_event_type"
    assert validated[("01_events.jsonl", 1)][2] == ""


def test_records_read_equal_accepted_plus_quarantined(malformed: Build) -> None:
    files = sorted((MALFORMED / "events").glob("*.jsonl"))
    records_in_files = sum(len(nonblank_lines(path)) for path in files)
    read = dict(
        query(malformed.warehouse, "select record_id, event_id from stg_aep__experience_events")
    )
    accepted = [
        r[0] for r in query(malformed.warehouse, "select record_id from int_events_accepted")
    ]
    rejected = [r[0] for r in query(malformed.warehouse, "select record_id from rejected_events")]
    assert len(read) == records_in_files  # blank lines are not records
    assert len(accepted) == len(set(accepted)) and len(rejected) == len(set(rejected))
    assert not set(accepted) & set(rejected)
    lost = {read[r] for r in read.keys() - set(accepted) - set(rejected)}
    assert lost == set(), "read but neither accepted nor quarantined (by _id)"
    assert set(accepted) | set(rejected) == read.keys()
    assert len(read) == len(accepted) + len(rejected)


def test_duplicates_keep_the_first_copy(malformed: Build) -> None:
    rows = query(
        malformed.warehouse,
        """
        select event_id, event_date, regexp_extract(source_file, '[^/]+$')
        from int_events_accepted
        where event_id like 'dup-%'
        order by event_id
        """,
    )
    assert rows == [
        ("dup-across-files", date(2024, 3, 1), "01_events.jsonl"),
        ("dup-first-copy-bad", date(2024, 3, 1), "02_events.jsonl"),
        ("dup-in-file", date(2024, 3, 1), "01_events.jsonl"),
        ("dup-in-second-file", date(2024, 3, 1), "02_events.jsonl"),
    ]


def test_accepted_events_are_utc_and_ignore_unknown_fields(malformed: Build) -> None:
    rows = query(
        malformed.warehouse,
        """
        select event_id, event_at, event_date, identity_key, page_name, revenue
        from int_events_accepted
        where event_id in ('ok-offset', 'ok-extra-fields', 'ok-purchase')
        order by event_id
        """,
    )
    assert rows == [
        ("ok-extra-fields", datetime(2024, 3, 1, 10), date(2024, 3, 1), "ECID:E-1", "Home", None),
        ("ok-offset", datetime(2024, 2, 29, 23, 30), date(2024, 2, 29), "ECID:E-1", None, None),
        ("ok-purchase", datetime(2024, 3, 1, 10), date(2024, 3, 1), "CRMID:C-1", None, 25.5),
    ]


def test_null_event_type_is_quarantined_not_lost(malformed: Build, validated: dict) -> None:
    """`"eventType": null` must be quarantined: today it is marked accepted but the clean
    stream's join to event_types drops it, so it is in neither output."""
    event_id, reason = SINGLED_OUT[36]
    assert validated[("01_events.jsonl", 36)][:2] == (event_id, reason)


def test_record_size_is_measured_in_bytes(validated: dict) -> None:
    """770 characters but 1,370 UTF-8 bytes: over max_event_bytes (1024)."""
    event_id, reason = SINGLED_OUT[37]
    assert validated[("01_events.jsonl", 37)][:2] == (event_id, reason)


def test_timestamps_without_time_or_offset_are_unparseable(validated: dict) -> None:
    """RFC 3339 date-times carry a time and an offset; '2024-03-01' and
    '2024-03-01T10:00:00' are not, and reading them as UTC midnight / UTC is a guess."""
    for line in (38, 39):
        assert validated[("01_events.jsonl", line)][:2] == SINGLED_OUT[line], line


def test_jsonl_source_row_is_the_line_in_its_file(malformed: Build) -> None:
    rows = query(
        malformed.warehouse,
        """
        select regexp_extract(source_file, '[^/]+$'), source_row
        from stg_aep__experience_events
        order by source_file, source_row
        """,
    )
    for path in sorted((MALFORMED / "events").glob("*.jsonl")):
        rows_of_file = [row for file, row in rows if file == path.name]
        assert rows_of_file == nonblank_lines(path), path.name


def test_invalid_utf8_is_a_one_line_error_naming_the_line(tmp_path: Path) -> None:
    """A byte that is not UTF-8 would make DuckDB fail the whole read: the CLI checks first and
    names the file and line, exit 2, before anything is loaded (so nothing is lost)."""
    events = tmp_path / "raw" / "events"
    events.mkdir(parents=True)
    good = (MALFORMED / "events" / "01_events.jsonl").read_text(encoding="utf-8").split("\n")[0]
    (events / "latin1.jsonl").write_bytes(
        good.encode() + b"\n" + good.replace("ok-page", "caf\xe9").encode("latin-1") + b"\n"
    )
    result = run_cli("run", "--raw", str(tmp_path / "raw"), "--target", "ci", "--quiet")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "latin1.jsonl line 2 is not valid UTF-8" in lines[0], lines


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
    event("d1", "2024-03-02T12:00:00Z", {"Email_LC_SHA256": "H-D", "ECID": "E-D"}),
    event("d2", "2024-03-04T12:00:00Z", {"CRMID": "D-1", "Email_LC_SHA256": "H-D"}),
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
    """E-D was seen with the email H-D (03-02), H-D with the CRMID D-1 (03-04): as of 03-10 all
    three days belong to CRMID:D-1. Links are not followed transitively today, so d3 lands on a
    separate customer `Email_LC_SHA256:H-D` and the person is split in two."""
    customers = features(stitched)
    assert customers["CRMID:D-1"] == (date.fromisoformat(AS_OF), 3, 0, 0.0)
    assert not {key for key in customers if key.endswith(":H-D") or key.endswith(":E-D")}


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


def test_no_stray_files_in_fixture() -> None:
    """Only JSON Lines in events/, so dbt reads exactly what EXPECTED describes."""
    assert sorted(p.name for p in (MALFORMED / "events").iterdir()) == [
        "01_events.jsonl",
        "02_events.jsonl",
    ]
