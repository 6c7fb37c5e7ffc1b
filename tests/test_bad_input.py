"""The malformed-input corpus (tests/fixtures/bad_input/cases.yml), run through the real tools.

Every case declares its outcome in the manifest: per record, accepted or quarantined with a
reason code; per order file, the rejected lines; or a one-line `error:` and exit code 2. The
tests check those outcomes, that nothing is lost (records read = accepted + quarantined, per
file), that no command prints a traceback, and that the manifest and the files agree.

All event cases share ONE `dbt build` of the ingestion models (about 10 s); order files go
through `import-transactions` (no dbt); the errors fail in the CLI's checks within seconds,
except the as-of date before all data, which builds (a full run on two events).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import query, run_cli, run_dbt
from test_cli import assert_user_error
from test_ingestion import Build, dbt_build

CORPUS = Path(__file__).parent / "fixtures" / "bad_input"
MANIFEST = yaml.safe_load((CORPUS / "cases.yml").read_text(encoding="utf-8"))
EVENT_CASES: dict[str, dict] = MANIFEST["events"]
ORDER_CASES: dict[str, dict] = MANIFEST["orders"]
ERROR_CASES: dict[str, dict] = MANIFEST["errors"]
ACCEPTED = "accepted"
DEFAULT_ORDER_ARGS = ["--customer-col", "customer_id", "--date-col", "order_date"]
DEFAULT_ORDER_ARGS += ["--amount-col", "amount"]


# ----------------------------------------------------------------------------------------------
# files written at test time (too large to commit)
# ----------------------------------------------------------------------------------------------
def _event_line(event_id: str, **extra: object) -> str:
    record = {
        "_id": event_id,
        "timestamp": "2024-03-01T10:00:00Z",
        "eventType": "web.webpagedetails.pageViews",
        "identityMap": {"ECID": [{"id": "E-1", "primary": True}]},
        **extra,
    }
    return json.dumps(record, separators=(",", ":"))


def _five_mb_record(path: Path) -> None:
    padding = {"padding": "x" * (5 * 1024 * 1024)}
    lines = [_event_line("before-5mb"), _event_line("record-5mb", _acme=padding)]
    path.write_text("\n".join([*lines, _event_line("after-5mb")]) + "\n", encoding="utf-8")


GENERATED_EVENT_FILES = {"five_mb_record.jsonl": _five_mb_record}


def nonblank_lines(path: Path) -> list[int]:
    """1-based numbers of the lines that hold a record (not empty, not only white space)."""
    lines = path.read_bytes().decode("utf-8-sig").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [number for number, text in enumerate(lines, start=1) if text.strip()]


def expected_records() -> dict[tuple[str, int], dict]:
    """(file, line) -> {"case", "outcome", and "event_at" / "reason_codes" when declared}."""
    expected = {}
    for case, spec in EVENT_CASES.items():
        for file, lines in spec["files"].items():
            for line, outcome in lines.items():
                detail = outcome if isinstance(outcome, dict) else {"outcome": outcome}
                expected[(file, int(line))] = {"case": case, **detail}
    return expected


# ----------------------------------------------------------------------------------------------
# the manifest and the files agree
# ----------------------------------------------------------------------------------------------
def _claimed_files() -> set[Path]:
    """Every file of the corpus that some case uses."""
    claimed: set[Path] = set()

    def claim(relative: str) -> None:
        path = CORPUS / relative
        if path.is_dir():
            claimed.update(p for p in path.rglob("*") if p.is_file())
        elif path.exists():
            claimed.add(path)

    for spec in EVENT_CASES.values():
        if not spec.get("generated"):
            for file in spec["files"]:
                claimed.add(CORPUS / "events" / file)
    for spec in ORDER_CASES.values():
        claimed.add(CORPUS / spec["file"])
    for spec in ERROR_CASES.values():
        for arg in spec.get("args", []):
            claim(arg)
        if "dbt_vars" in spec:
            claim(spec["dbt_vars"]["raw_dir"])
    return claimed


def test_the_corpus_has_at_least_40_cases_each_saying_what_it_covers() -> None:
    cases = {**EVENT_CASES, **{f"orders/{k}": v for k, v in ORDER_CASES.items()}, **ERROR_CASES}
    assert len(cases) == len(EVENT_CASES) + len(ORDER_CASES) + len(ERROR_CASES) >= 40
    assert [name for name, spec in cases.items() if not spec.get("covers")] == []


def test_every_file_belongs_to_a_case_and_every_case_file_exists() -> None:
    on_disk = {p for p in CORPUS.rglob("*") if p.is_file()} - {
        CORPUS / "cases.yml",
        CORPUS / "README.md",
    }
    claimed = _claimed_files()
    assert sorted(map(str, on_disk - claimed)) == [], "files no case uses"
    assert sorted(map(str, claimed - on_disk)) == [], "files the manifest names but are missing"
    for case, spec in EVENT_CASES.items():
        for file in spec["files"]:
            generated = file in GENERATED_EVENT_FILES
            assert bool(spec.get("generated")) == generated, case
            assert (CORPUS / "events" / file).exists() != generated, (case, file)
    for case, spec in ORDER_CASES.items():
        assert (CORPUS / spec["file"]).is_file(), case


def test_the_manifest_lists_every_record_of_every_event_file() -> None:
    """A record the manifest does not list would be unchecked: every non-blank line is listed."""
    for case, spec in EVENT_CASES.items():
        for file, lines in spec["files"].items():
            if file in GENERATED_EVENT_FILES:
                continue
            listed = sorted(int(line) for line in lines)
            assert listed == nonblank_lines(CORPUS / "events" / file), (case, file)


def test_outcomes_are_reason_codes_and_cover_every_code(project_dir: Path) -> None:
    with (project_dir / "seeds" / "quarantine_reasons.csv").open(encoding="utf-8") as fh:
        seed_codes = {row["reason_code"] for row in csv.DictReader(fh)}
    outcomes = {spec["outcome"] for spec in expected_records().values()}
    assert outcomes - seed_codes == {ACCEPTED}
    assert seed_codes - outcomes == set(), "reason codes no case produces"


# ----------------------------------------------------------------------------------------------
# event files: one dbt build over all of them
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def event_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    work = tmp_path_factory.mktemp("bad_input_events")
    events = work / "raw" / "events"
    shutil.copytree(CORPUS / "events", events)
    for name, write in GENERATED_EVENT_FILES.items():
        write(events / name)
    return dbt_build(
        work,
        work / "raw",
        # quarantine_reasons: only tests ref it, so `+rejected_events` alone does not build it
        "+rejected_events +int_events_accepted quarantine_reasons",
        **MANIFEST["event_build_vars"],
    )


@pytest.mark.dbt
def test_event_build_passes_every_dbt_test(event_build: Build) -> None:
    result = event_build.result
    assert event_build.statuses, result.stdout[-3000:] + result.stderr[-3000:]
    accounting = "test.profile_enrichment.assert_every_record_accounted_once"
    assert event_build.statuses.get(accounting) == "pass"
    assert event_build.failed_nodes() == {}
    assert result.returncode == 0
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.dbt
def test_each_record_has_its_expected_outcome(event_build: Build) -> None:
    rows = query(
        event_build.warehouse,
        """
        select regexp_extract(source_file, '[^/]+$'), source_row, is_accepted, reason_code,
            reason_codes, event_at
        from int_events_validated
        """,
    )
    actual = {}
    for file, line, is_accepted, reason, reasons, event_at in rows:
        actual[(file, line)] = {
            "outcome": ACCEPTED if is_accepted else reason,
            "reason_codes": reasons,
            "event_at": event_at,
        }
    expected = expected_records()
    assert sorted(actual.keys() - expected.keys()) == [], "records the manifest does not expect"
    assert sorted(expected.keys() - actual.keys()) == [], "expected records that were not read"
    wrong = []
    for key, spec in sorted(expected.items()):
        got = actual[key]
        want = {"outcome": spec["outcome"]}
        seen = {"outcome": got["outcome"]}
        if "reason_codes" in spec:
            want["reason_codes"], seen["reason_codes"] = spec["reason_codes"], got["reason_codes"]
        if "event_at" in spec:
            want["event_at"] = datetime.fromisoformat(spec["event_at"])
            seen["event_at"] = got["event_at"]
        if want != seen:
            wrong.append((spec["case"], *key, want, seen))
    assert wrong == []


@pytest.mark.dbt
def test_accepted_records_keep_their_known_fields(event_build: Build) -> None:
    """Unknown fields, offsets and odd types beside them do not disturb what is read."""
    con = duckdb.connect(str(event_build.warehouse), read_only=True)
    try:
        relation = con.sql(
            """
            select regexp_extract(validated.source_file, '[^/]+$') as file,
                validated.source_row as line, accepted.*
            from int_events_accepted as accepted
            inner join int_events_validated as validated using (record_id)
            """
        )
        rows = {
            (r[0], r[1]): dict(zip(relation.columns, r, strict=True)) for r in relation.fetchall()
        }
    finally:
        con.close()
    checked = {key: spec["fields"] for key, spec in expected_records().items() if "fields" in spec}
    assert checked
    actual = {
        key: {column: rows[key][column] for column in fields} for key, fields in checked.items()
    }
    assert actual == checked


@pytest.mark.dbt
def test_every_file_accounts_for_every_record(event_build: Build) -> None:
    """Per file: records in the file = accepted + quarantined; each record in exactly one."""
    placed = query(
        event_build.warehouse,
        """
        select regexp_extract(stg.source_file, '[^/]+$') as file, stg.record_id,
            accepted.record_id is not null, rejected.record_id is not null
        from stg_aep__experience_events as stg
        left join int_events_accepted as accepted using (record_id)
        left join rejected_events as rejected using (record_id)
        """,
    )
    events = event_build.warehouse.parent / "raw" / "events"
    per_file: dict[str, list[int]] = {}
    for file, _, is_accepted, is_rejected in placed:
        assert is_accepted != is_rejected, (file, is_accepted, is_rejected)
        per_file.setdefault(file, [0, 0])[0 if is_accepted else 1] += 1
    for path in sorted(events.iterdir()):
        accepted, quarantined = per_file.pop(path.name, [0, 0])
        assert len(nonblank_lines(path)) == accepted + quarantined, path.name
    assert per_file == {}, "records from files that are not in the folder"
    (totals,) = query(
        event_build.warehouse,
        """
        select (select count(*) from stg_aep__experience_events),
            (select count(*) from int_events_accepted), (select count(*) from rejected_events)
        """,
    )
    assert totals[0] == totals[1] + totals[2] == len(placed)


@pytest.mark.dbt
def test_source_row_is_the_line_in_its_file(event_build: Build) -> None:
    rows = query(
        event_build.warehouse,
        "select regexp_extract(source_file, '[^/]+$'), source_row from stg_aep__experience_events",
    )
    events = event_build.warehouse.parent / "raw" / "events"
    for path in sorted(events.iterdir()):
        assert sorted(row for file, row in rows if file == path.name) == nonblank_lines(path)


# ----------------------------------------------------------------------------------------------
# order files: import-transactions
# ----------------------------------------------------------------------------------------------
IMPORT_RE = re.compile(
    r"read ([\d,]+) rows: imported ([\d,]+) as ([\d,]+) orders, rejected ([\d,]+)"
)


def _data_rows(path: Path) -> int:
    """Rows after the header, counted without the importer: non-blank lines minus one."""
    lines = path.read_bytes().decode("utf-8-sig").splitlines()
    return max(0, len([line for line in lines if line.strip()]) - 1)


@pytest.mark.parametrize("case", ORDER_CASES)
def test_order_file(case: str, tmp_path: Path) -> None:
    spec = ORDER_CASES[case]
    source = CORPUS / spec["file"]
    out = tmp_path / "raw"
    args = spec.get("args", DEFAULT_ORDER_ARGS)
    result = run_cli("import-transactions", str(source), "--out", str(out), *args, timeout=120)
    if "error" in spec:
        assert_user_error(result, *spec["error"])
        assert not (out / "events").exists()
        return
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr == ""
    match = IMPORT_RE.search(result.stdout)
    assert match, result.stdout
    read, imported, orders, rejected = (int(g.replace(",", "")) for g in match.groups())
    assert read == _data_rows(source) == imported + rejected
    assert imported == spec["imported"]
    rejects_file = out / "rejects" / f"import-{source.stem}.csv"
    with rejects_file.open(encoding="utf-8", newline="") as fh:
        rejects = {int(row["line_number"]): row["reason"] for row in csv.DictReader(fh)}
    assert rejects == {int(line): reason for line, reason in spec["rejects"].items()}
    written = sorted((out / "events").glob("*")) if (out / "events").exists() else []
    if imported:
        (events_file,) = written
        assert pq.read_metadata(events_file).num_rows == orders
    else:
        assert written == []


# ----------------------------------------------------------------------------------------------
# errors: one line, exit code 2
# ----------------------------------------------------------------------------------------------
def _arg(value: str, tmp: Path) -> str:
    """`{tmp}` is the test's tmp folder; a path that exists in the corpus becomes absolute."""
    value = value.replace("{tmp}", str(tmp))
    return str(CORPUS / value) if (CORPUS / value).exists() else value


@pytest.mark.parametrize("case", ERROR_CASES)
def test_error_case(case: str, tmp_path: Path) -> None:
    spec = ERROR_CASES[case]
    if spec.get("generated"):  # an empty events folder (git keeps no empty folders)
        (tmp_path / "empty_raw" / "events").mkdir(parents=True)
    if "dbt_vars" in spec:
        dbt_vars = {k: _arg(str(v), tmp_path) for k, v in spec["dbt_vars"].items()}
        result = run_dbt(
            "build",
            "--target",
            "ci",
            "--select",
            "int_run_as_of_date",
            "--target-path",
            str(tmp_path / "target"),
            "--log-path",
            str(tmp_path / "logs"),
            dbt_vars={"raw_format": "jsonl", "raw_profiles": False, **dbt_vars},
        )
        assert result.returncode == 2, result.stdout[-3000:]
        assert "Traceback" not in result.stdout + result.stderr
        lines = [ln for ln in result.stdout.splitlines() if all(w in ln for w in spec["words"])]
        assert lines, result.stdout[-3000:]
        return
    args = [_arg(a, tmp_path) for a in spec["args"]]
    warehouse = tmp_path / "w.duckdb"
    if args[0] in ("run", "export"):
        args += ["--warehouse", str(warehouse)]
    if args[0] == "run":
        args += ["--artifacts", str(tmp_path / "artifacts"), "--quiet"]
    if args[0] == "export":
        args += ["--out", str(tmp_path / "exports")]
    result = run_cli(*args, env=spec.get("env"), timeout=600)
    assert_user_error(result, *spec["words"])
    for name, value in (spec.get("env") or {}).items():
        if "SECRET" in name:
            assert value not in result.stdout + result.stderr
    if "warehouse_rows" in spec:
        for table, rows in spec["warehouse_rows"].items():
            assert query(warehouse, f"select count(*) from {table}") == [(rows,)], table
    else:
        assert not warehouse.exists()  # refused before anything ran
