"""Validation and the accepted stream are built one raw file at a time on DuckDB, and nightly
only for what changed (macros/ingestion/events_by_file.sql).

Real `dbt build --select +int_events_accepted` runs on small JSON Lines files: a first load of
two files, then a night that adds a file sorting BEFORE them and one after, with event_ids
that repeat across files. Before the night, rows of the warehouse are overwritten with a
marker: a marker survives only where the night did not rebuild. At the end one full build of
the same four files into a fresh warehouse must hold the same rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from conftest import query
from test_ingestion import Build, dbt_build, event

pytestmark = pytest.mark.dbt

SELECT = "+int_events_accepted"
MARKER = "written before the night"


def _line(
    event_id: str, *, page: str = "home", timestamp: str | None = "2024-03-01T10:00:00Z"
) -> str:
    record: dict = {
        "_id": event_id,
        "eventType": "web.webpagedetails.pageViews",
        "identityMap": {"ECID": [{"id": f"E-{event_id}", "primary": True}]},
        "web": {"webPageDetails": {"name": page}},
    }
    if timestamp is not None:
        record["timestamp"] = timestamp
    return json.dumps(record)


FIRST_LOAD = {
    # e6's copy in b has no timestamp: quarantined, so c's copy is the first clean one
    "b.jsonl": [_line("e1"), _line("e2"), "{not json", _line("e5"), _line("e6", timestamp=None)],
    "c.jsonl": [_line("e2"), _line("e6"), _line("e7")],
    # e10 is after the first load's pinned clock; the night's clock is now (not pinned)
    "e.jsonl": [_line("e10", timestamp="2024-03-04T00:00:00Z"), _line("e11")],
}
FIRST_CLOCK = "2024-03-03"
THE_NIGHT = {
    "a.jsonl": [_line("e2", page="from a"), _line("e8")],  # sorts first: its e2 is the first copy
    "d.jsonl": [_line("e1"), _line("e9")],  # sorts last: its e1 is a duplicate
}


def _write(folder: Path, files: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _build(work: Path, raw: Path, clock: str = "") -> Build:
    build = dbt_build(work, raw, SELECT, ingestion_clock=clock)
    assert build.result.returncode == 0, build.result.stdout[-3000:] + build.result.stderr[-3000:]
    return build


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("events_by_file")
    raw = work / "raw" / "events"
    _write(raw, FIRST_LOAD)
    nightly = _build(work / "nightly", raw.parent, FIRST_CLOCK).warehouse
    first_outcomes = _outcomes(nightly)
    con = duckdb.connect(str(nightly))
    try:
        con.execute(f"update int_events_validated set raw_excerpt = '{MARKER}'")
        con.execute(f"update int_events_accepted set page_name = '{MARKER}'")
    finally:
        con.close()
    _write(raw, THE_NIGHT)
    _build(work / "nightly", raw.parent)
    full = _build(work / "full", raw.parent).warehouse
    return {"nightly": nightly, "rebuilt": full, "first": first_outcomes}


def _outcomes(warehouse: Path) -> dict[tuple[str, str], str]:
    rows = query(
        warehouse,
        "select source_file, coalesce(event_id, '?'), reason_codes from int_events_validated",
    )
    return {(Path(file).name, event_id): reasons for file, event_id, reasons in rows}


def test_duplicates_across_files_keep_the_first_copy_even_from_a_file_that_arrived_later(
    nights: dict,
) -> None:
    outcomes = _outcomes(nights["nightly"])
    assert outcomes[("a.jsonl", "e2")] == ""  # arrived last night, sorts first
    assert outcomes[("b.jsonl", "e2")] == "duplicate_event_id"  # was the accepted copy
    assert outcomes[("c.jsonl", "e2")] == "duplicate_event_id"
    assert outcomes[("b.jsonl", "e1")] == ""
    assert outcomes[("d.jsonl", "e1")] == "duplicate_event_id"
    assert outcomes[("b.jsonl", "e6")] == "missing_timestamp"
    assert outcomes[("c.jsonl", "e6")] == ""  # the first copy that passes every other check
    assert outcomes[("b.jsonl", "?")] == "invalid_json"
    accepted = query(nights["nightly"], "select source_file, event_id from int_events_accepted")
    assert sorted((Path(f).name, e) for f, e in accepted) == [
        ("a.jsonl", "e2"), ("a.jsonl", "e8"), ("b.jsonl", "e1"), ("b.jsonl", "e5"),
        ("c.jsonl", "e6"), ("c.jsonl", "e7"), ("d.jsonl", "e9"),
        ("e.jsonl", "e10"), ("e.jsonl", "e11"),
    ]  # fmt: skip


def test_a_night_rechecks_no_old_file_and_rebuilds_only_files_whose_accepted_events_changed(
    nights: dict,
) -> None:
    excerpts = query(
        nights["nightly"],
        "select source_file, count(*) filter (where raw_excerpt = "
        f"'{MARKER}') from int_events_validated group by 1",
    )
    kept = {Path(file).name: n for file, n in excerpts}
    # e.jsonl held a record quarantined against the clock, which is not pinned now: re-checked
    assert kept == {"a.jsonl": 0, "b.jsonl": 5, "c.jsonl": 3, "d.jsonl": 0, "e.jsonl": 0}
    pages = query(
        nights["nightly"],
        f"select source_file, count(*) filter (where page_name = '{MARKER}') "
        "from int_events_accepted group by 1",
    )
    # b lost its e2 to a, e gained e10: rebuilt; c kept the same accepted events: untouched
    assert {Path(file).name: n for file, n in pages} == {
        "a.jsonl": 0, "b.jsonl": 0, "c.jsonl": 2, "d.jsonl": 0, "e.jsonl": 0,
    }  # fmt: skip


def test_records_in_the_future_are_checked_again_while_the_clock_moves(nights: dict) -> None:
    assert nights["first"][("e.jsonl", "e10")] == "future_timestamp"  # clock pinned before it
    assert _outcomes(nights["nightly"])[("e.jsonl", "e10")] == ""  # the clock is now


def test_the_nights_end_where_one_full_build_ends(nights: dict) -> None:
    con = duckdb.connect()
    try:
        for name in ("nightly", "rebuilt"):
            path = nights[name]
            con.execute(f"attach '{path}' as {name} (read_only)")
        for model, tampered in [
            ("int_events_validated", "raw_excerpt"),
            ("int_events_accepted", "page_name"),
        ]:
            columns = [
                c
                for (c,) in con.execute(
                    "select column_name from information_schema.columns "
                    f"where table_catalog = 'rebuilt' and table_name = '{model}' order by ordinal_position"
                ).fetchall()
                if c != tampered
            ]
            listed = ", ".join(f'"{c}"' for c in columns)
            (full_rows,) = con.execute(f"select count(*) from rebuilt.{model}").fetchone()
            differences = con.execute(
                f"(select {listed} from nightly.{model} except all select {listed} from rebuilt.{model}) "
                f"union all (select {listed} from rebuilt.{model} except all select {listed} from nightly.{model})"
            ).fetchall()
            assert full_rows > 0 and differences == [], (model, differences)
    finally:
        con.close()


def test_a_full_build_validates_file_by_file_too(nights: dict) -> None:
    """On a full build the model's own query selects no file (every staging read is `where
    false`), so every row of the fresh warehouse was written by the per-file post-hooks."""
    compiled = nights["rebuilt"].parent / "target" / "compiled" / "profile_enrichment" / "models"
    for model in ("int_events_validated", "int_events_accepted"):
        sql = (compiled / "intermediate" / "ingestion" / f"{model}.sql").read_text()
        assert sql.count("where false") == 3 and "source_file =" not in sql, model
        (rows,) = query(nights["rebuilt"], f"select count(*) from {model}")
        assert rows[0] > 0, model
    outcomes = _outcomes(nights["rebuilt"])
    assert {file for file, _ in outcomes} == {"a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl", "e.jsonl"}


# ------------------------------------------------------------------------------ identity links
# int_identity_links joins records and identities one file at a time (macros/identity/); the
# pairs of every file are then ranked together. Pairs that span files, in both orders:
H = hashlib.sha256(b"h@example.invalid").hexdigest()
LINK_FILES = {
    "a.jsonl": [
        event("a1", "2024-03-05T12:00:00Z", {"CRMID": "C1", "ECID": "X"}),
        event("a2", "2024-03-04T12:00:00Z", {"CRMID": "C2", "ECID": "Y"}),
        event("a3", "2024-03-06T12:00:00Z", {"CRMID": "C3", "Email_LC_SHA256": H}),
    ],
    "b.jsonl": [
        event("b1", "2024-03-02T12:00:00Z", {"CRMID": "C1", "ECID": "X"}),  # earlier, later file
        event("b2", "2024-03-03T12:00:00Z", {"CRMID": "C1", "ECID": "Y"}),  # Y: C1 came first
        event("b3", "2024-03-01T12:00:00Z", {"Email_LC_SHA256": H, "ECID": "Z"}),  # Z -> H -> C3
    ],
}
EXPECTED_LINKS = {
    ("ECID:X", "CRMID:C1", "2024-03-02"),
    ("ECID:Y", "CRMID:C1", "2024-03-03"),
    (f"Email_LC_SHA256:{H}", "CRMID:C3", "2024-03-06"),
    ("ECID:Z", "CRMID:C3", "2024-03-06"),  # from the day both links exist
}


@pytest.fixture(scope="module")
def links(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Build]:
    work = tmp_path_factory.mktemp("links_by_file")
    raw = work / "raw" / "events"
    _write(raw, {name: [json.dumps(r) for r in records] for name, records in LINK_FILES.items()})
    builds = {}
    for name, by_file in (("by_file", True), ("one_query", False)):
        build = dbt_build(work / name, raw.parent, "+int_identity_links", events_by_file=by_file)
        assert build.result.returncode == 0, build.result.stdout[-3000:]
        builds[name] = build
    return builds


def _links(build: Build) -> set[tuple[str, str, str]]:
    rows = query(
        build.warehouse,
        "select alias_key, person_key, cast(linked_date as varchar) from int_identity_links",
    )
    return {tuple(row) for row in rows}


def test_identity_links_rank_pairs_across_files(links: dict[str, Build]) -> None:
    assert _links(links["by_file"]) == EXPECTED_LINKS
    assert _links(links["one_query"]) == EXPECTED_LINKS


def test_identity_links_are_joined_file_by_file(links: dict[str, Build]) -> None:
    """By file, the model's compiled query selects no pair: the post-hook wrote every row."""
    for name, conditions in (("by_file", 2), ("one_query", 0)):
        target = links[name].warehouse.parent / "target" / "compiled" / "profile_enrichment"
        compiled = (target / "models/intermediate/identity/int_identity_links.sql").read_text()
        assert compiled.count("where false") == conditions, name
