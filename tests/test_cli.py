"""The `profile-enrichment` command line, run as a user runs it (a subprocess from the project root).

Help texts, users' mistakes (one `error:` line, exit code 2, never a traceback), an order file
imported and run through the pipeline, the run summary against the warehouse, and dbt's own
failure path for an invalid var.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from conftest import CliResult, query, run_cli
from profile_enrichment.cli import build_parser

SUBCOMMANDS = [
    "generate",
    "import-transactions",
    "run",
    "export",
    "validate",
    "upload",
    "report",
    "load-raw",
    "bench",
]
GOOD_EVENT = {
    "_id": "ev-1",
    "timestamp": "2024-02-10T12:00:00Z",
    "eventType": "web.webpagedetails.pageViews",
    "identityMap": {"CRMID": [{"id": "K1", "primary": True}]},
}


def assert_user_error(result: CliResult, *words: str) -> None:
    """One line on stderr, starting `error:`, naming the problem; exit code 2; no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.returncode == 2


# ----------------------------------------------------------------------------------------------
# help
# ----------------------------------------------------------------------------------------------
def test_the_tests_know_every_subcommand() -> None:
    (subparsers,) = [
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    assert sorted(subparsers.choices) == sorted(SUBCOMMANDS)


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_shows_an_example(command: str | None) -> None:
    result = run_cli(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    examples = result.stdout.lower().split("example", 1)
    assert len(examples) == 2, result.stdout  # an "example(s):" section
    for sub in [command] if command else SUBCOMMANDS:
        assert f"profile-enrichment {sub} " in examples[1], (sub, result.stdout)


# ----------------------------------------------------------------------------------------------
# users' mistakes
# ----------------------------------------------------------------------------------------------
def _events_dir(tmp: Path) -> Path:
    events = tmp / "raw" / "events"
    events.mkdir(parents=True)
    return events


def _valid_raw(tmp: Path) -> Path:
    (_events_dir(tmp) / "events.jsonl").write_text(json.dumps(GOOD_EVENT) + "\n")
    return tmp / "raw"


def _orders_csv(tmp: Path) -> Path:
    path = tmp / "orders.csv"
    path.write_text("customer_id,order_date,amount\nK1,2024-02-01,10.00\n")
    return path


# Malformed input (truncated or mixed files, an empty folder, bad as-of dates) is in the corpus,
# tests/fixtures/bad_input/cases.yml (test_bad_input.py); these are mistakes of paths and options.
RUN_MISTAKES: dict[str, tuple[Callable[[Path], Path], list[str], dict[str, str], list[str]]] = {
    # name: (make the raw folder, extra args, env, words the message must hold)
    "missing raw folder": (lambda tmp: tmp / "nowhere", [], {}, ["raw folder not found"]),
    "no events folder": (lambda tmp: tmp, [], {}, ["no events/ folder"]),
    "sql in as-of": (
        _valid_raw,
        ["--as-of", "2024-01-01'; drop table x; --"],
        {},
        ["--as-of", "YYYY-MM-DD"],
    ),
}


@pytest.mark.parametrize("mistake", RUN_MISTAKES)
def test_run_mistakes_are_one_line_errors(mistake: str, tmp_path: Path) -> None:
    make_raw, args, env, words = RUN_MISTAKES[mistake]
    raw = make_raw(tmp_path)
    result = run_cli(
        "run",
        "--raw",
        str(raw),
        "--warehouse",
        str(tmp_path / "w.duckdb"),
        "--artifacts",
        str(tmp_path / "artifacts"),
        *args,
        env=env,
        timeout=120,
    )
    assert_user_error(result, *words)
    assert not (tmp_path / "w.duckdb").exists()  # nothing ran


IMPORT_MISTAKES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    "missing file": (
        lambda tmp: [str(tmp / "no-such-orders.csv"), "--customer-col", "customer_id"],
        ["file not found", "no-such-orders.csv"],
    ),
    "missing mapped column": (
        lambda tmp: [str(_orders_csv(tmp)), "--customer-col", "client"],
        ["'client'", "not found", "customer_id"],
    ),
}


@pytest.mark.parametrize("mistake", IMPORT_MISTAKES)
def test_import_mistakes_are_one_line_errors(mistake: str, tmp_path: Path) -> None:
    make_args, words = IMPORT_MISTAKES[mistake]
    result = run_cli(
        "import-transactions",
        *make_args(tmp_path),
        "--date-col",
        "order_date",
        "--amount-col",
        "amount",
        "--out",
        str(tmp_path / "raw"),
        timeout=120,
    )
    assert_user_error(result, *words)
    assert not (tmp_path / "raw" / "events").exists()


@pytest.mark.parametrize("command", ["run", "import-transactions"])
def test_output_path_under_a_file_is_a_user_error(command: str, tmp_path: Path) -> None:
    """A warehouse or output folder that cannot be created (its parent is a regular file)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    if command == "run":
        args = [
            "run",
            "--raw",
            str(_valid_raw(tmp_path)),
            "--warehouse",
            str(blocker / "w.duckdb"),
            "--artifacts",
            str(tmp_path / "artifacts"),
        ]
    else:
        args = [
            "import-transactions",
            str(_orders_csv(tmp_path)),
            "--customer-col",
            "customer_id",
            "--date-col",
            "order_date",
            "--amount-col",
            "amount",
            "--out",
            str(blocker),
        ]
    result = run_cli(*args, timeout=120)
    assert_user_error(result, str(blocker))


# ----------------------------------------------------------------------------------------------
# an order file, imported and run
# ----------------------------------------------------------------------------------------------
ORDERS = """\
customer_id,order_date,amount
K1,2024-02-01,10.00
K1,2024-02-15,15.50
K2,2024-02-03,7.25
K3,not-a-date,5.00
K2,2024-02-20T23:30:00Z,2.75
K4,2024-03-05,99.00
"""
AS_OF = "2024-03-01"
EXTRA_EVENTS = [
    json.dumps(GOOD_EVENT),  # K1 visits: no order, no revenue
    '{"_id": "broken", "timestamp": ',
    json.dumps({k: v for k, v in GOOD_EVENT.items() if k != "identityMap"} | {"_id": "anon"}),
]
SUMMARY_RE = re.compile(r"events:\s+([\d,]+) read, ([\d,]+) accepted, ([\d,]+) quarantined")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("imported")
    (work / "orders.csv").write_text(ORDERS)
    raw = work / "raw"
    imported = run_cli(
        "import-transactions",
        str(work / "orders.csv"),
        "--out",
        str(raw),
        "--customer-col",
        "customer_id",
        "--date-col",
        "order_date",
        "--amount-col",
        "amount",
        "--format",
        "jsonl",
    )
    assert imported.returncode == 0, imported.stderr
    (raw / "events" / "extra.jsonl").write_text("\n".join(EXTRA_EVENTS) + "\n")
    warehouse = work / "warehouse.duckdb"
    ran = run_cli(
        "run",
        "--raw",
        str(raw),
        "--warehouse",
        str(warehouse),
        "--artifacts",
        str(work / "artifacts"),
        "--as-of",
        AS_OF,
        "--select",
        "+customer_features",
        "--quiet",
        # dbt's target/ and logs/ in tmp: a run going on in the project folder keeps its own
        env={"DBT_TARGET_PATH": str(work / "target"), "DBT_LOG_PATH": str(work / "logs")},
    )
    return {"raw": raw, "import": imported, "run": ran, "warehouse": warehouse}


@pytest.mark.dbt
def test_import_reports_the_bad_row_by_line_number(imported: dict) -> None:
    assert "read 6 rows: imported 5 as 5 orders, rejected 1" in imported["import"].stdout
    rejects = imported["raw"] / "rejects" / "import-orders.csv"
    assert str(rejects) in imported["import"].stdout
    with rejects.open(encoding="utf-8", newline="") as fh:
        rows = [(int(r["line_number"]), r["reason"]) for r in csv.DictReader(fh)]
    assert rows == [(5, "unparseable_date")]  # the header is line 1


@pytest.mark.dbt
def test_imported_orders_reach_customer_features(imported: dict) -> None:
    assert imported["warehouse"].exists(), imported["run"].stdout[-3000:] + imported["run"].stderr
    rows = query(
        imported["warehouse"],
        """
        select customer_id, as_of_date, orders_total, revenue_total
        from customer_features
        order by customer_id
        """,
    )
    as_of = date.fromisoformat(AS_OF)
    # K3's only row was rejected; K4 ordered after the as-of date.
    assert rows == [
        ("CRMID:K1", as_of, 2, 25.5),
        ("CRMID:K2", as_of, 2, 10.0),
    ]
    (k4,) = query(
        imported["warehouse"],
        "select count(*) from int_events_accepted where identity_key = 'CRMID:K4'",
    )
    assert k4 == (1,)


@pytest.mark.dbt
def test_run_summary_matches_the_warehouse(imported: dict) -> None:
    out = imported["run"].stdout
    match = SUMMARY_RE.search(out)
    assert match, out[-3000:] + imported["run"].stderr[-3000:]
    printed = tuple(_int(g) for g in match.groups())
    (in_warehouse,) = query(
        imported["warehouse"],
        """
        select
            count(*),
            count(*) filter (where is_accepted),
            count(*) filter (where not is_accepted)
        from int_events_validated
        """,
    )
    assert printed == in_warehouse
    assert printed == (8, 6, 2)  # 5 orders + 3 hand-written records, 2 of them quarantined
    reasons = dict(
        query(
            imported["warehouse"],
            "select reason_code, count(*) from int_events_validated where not is_accepted group by 1",
        )
    )
    printed_reasons = {
        m.group(1): _int(m.group(2)) for m in re.finditer(r"^\s+- (\w+): ([\d,]+)$", out, re.M)
    }
    assert printed_reasons == reasons == {"invalid_json": 1, "missing_identity_map": 1}
    assert f"as-of date:  {AS_OF}" in out


@pytest.mark.dbt
def test_run_with_select_succeeds_on_a_fresh_warehouse(imported: dict) -> None:
    """`run --select +customer_features` on a new warehouse must not fail on tests of models
    outside the selection (dbt's default eager indirect selection picks them up)."""
    result = imported["run"]
    assert result.returncode == 0, result.stderr[-3000:]


# ----------------------------------------------------------------------------------------------
# dbt's own failure path
# ----------------------------------------------------------------------------------------------
def test_a_second_run_on_a_held_warehouse_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    """Another process holding the DuckDB file: one line, exit 2, in seconds, nothing touched."""
    import subprocess
    import sys

    warehouse = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            f"con = duckdb.connect({str(warehouse)!r})\n"
            "print('holding', flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        raw = tmp_path / "raw"
        (raw / "events").mkdir(parents=True)
        (raw / "events" / "e.jsonl").write_text('{"_id": "x"}\n')
        result = run_cli("run", "--raw", str(raw), "--warehouse", str(warehouse), timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stdout + result.stderr
    assert "another run holds the warehouse" in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        # DuckDB's out-of-memory message ends with advice and a link
        (
            "Runtime Error in model stg_x (models/stg_x.sql)\n  Out of Memory Error: failed to"
            " allocate data of size 16.0 KiB (1.0 MiB/1.0 MiB used)\n\n  Possible solutions:\n"
            "  * Reducing the number of threads (SET threads=X)\n\n  See also"
            " https://duckdb.org/docs/current/guides/performance/how_to_tune_workloads",
            "Out of Memory Error: failed to allocate data of size 16.0 KiB (1.0 MiB/1.0 MiB used)",
        ),
        (
            "Runtime Error in model int_y (models/int_y.sql)\n  IO Error: Could not write file"
            ' "w.tmp/duckdb_temp.tmp": No space left on device',
            'IO Error: Could not write file "w.tmp/duckdb_temp.tmp": No space left on device',
        ),
        # a Python model's traceback: its last line
        (
            'Traceback (most recent call last):\n  File "m.py", line 3, in model\n'
            "ValueError: no rows to train on",
            "ValueError: no rows to train on",
        ),
        ("Got 3 results, configured to fail if != 0", "Got 3 results, configured to fail if != 0"),
        ("", ""),
    ],
)
def test_a_failed_node_is_summarized_by_its_error_line(message, detail):
    from profile_enrichment.project import failure_detail

    lines = [line.strip() for line in message.splitlines() if line.strip()]
    assert failure_detail(lines) == detail
