"""Tests for the order-file importer (profile_enrichment.importer)."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jsonschema import Draft202012Validator

from profile_enrichment.errors import UserError
from profile_enrichment.importer import CDNOW_COLUMNS, import_transactions
from profile_enrichment.xdm_events import EVENT_SCHEMA, check_event_rules, parquet_rows_as_records

FIXTURES = Path(__file__).parent / "fixtures" / "orders"
# malformed order files: the corpus, whose outcomes test_bad_input.py checks through the CLI
BAD_INPUT = Path(__file__).parent / "fixtures" / "bad_input" / "orders"
SHARED = Path(__file__).resolve().parents[2] / "shared"
SIMPLE = {"customer_col": "customer_id", "date_col": "order_date", "amount_col": "amount"}


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    path = SHARED / "xdm" / "experience_event.schema.json"
    if not path.exists():
        pytest.fail(f"shared XDM schema not found at {path}")
    schema = json.loads(path.read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _records(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return parquet_rows_as_records(pq.read_table(path).to_pylist())


def _rejects(path: Path) -> list[tuple[int, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [(int(r["line_number"]), r["reason"]) for r in csv.DictReader(fh)]


def _assert_valid(records: list[dict], validator: Draft202012Validator) -> None:
    for record in records:
        errors = [e.message for e in validator.iter_errors(record)]
        assert not errors, (record, errors)
        assert not check_event_rules(record), record


def test_happy_path_csv(tmp_path: Path, validator: Draft202012Validator) -> None:
    summary = import_transactions(FIXTURES / "simple.csv", tmp_path, **SIMPLE)
    assert (summary.rows_read, summary.rows_imported, summary.rows_rejected) == (4, 4, 0)
    assert summary.orders == summary.events_written == 4
    assert summary.events_path == tmp_path / "events" / "orders-simple.parquet"
    assert pq.read_schema(summary.events_path).equals(EVENT_SCHEMA, check_metadata=False)
    records = _records(summary.events_path)
    _assert_valid(records, validator)
    first = records[0]
    assert first["eventType"] == "commerce.purchases"
    assert first["timestamp"] == "2024-01-05T00:00:00.000Z"  # date only -> midnight UTC
    assert records[1]["timestamp"] == "2024-01-06T10:15:00.000Z"
    assert first["identityMap"] == {
        "CRMID": [{"id": "C001", "authenticatedState": "authenticated", "primary": True}]
    }
    assert first["commerce"]["order"]["priceTotal"] == 19.99
    assert first["commerce"]["order"]["currencyCode"] == "USD"
    assert first["productListItems"] == [
        {
            "SKU": "UNKNOWN",
            "quantity": 1,
            "priceTotal": 19.99,
            "currencyCode": "USD",
            "productCategories": [{"categoryID": "uncategorized", "categoryName": "uncategorized"}],
        }
    ]
    assert len({r["commerce"]["order"]["purchaseID"] for r in records}) == 4
    assert len({r["_id"] for r in records}) == 4
    assert _rejects(summary.rejects_path) == []


def test_order_lines_group_into_one_event(tmp_path: Path, validator: Draft202012Validator) -> None:
    summary = import_transactions(
        FIXTURES / "order_lines.csv",
        tmp_path,
        customer_col="customer",
        date_col="date",
        amount_col="line_total",
        order_col="order_id",
        sku_col="sku",
        category_col="category",
        quantity_col="quantity",
        currency_col="currency",
        fmt="jsonl",
    )
    assert (summary.rows_read, summary.rows_imported, summary.orders) == (5, 5, 3)
    records = _records(summary.events_path)
    _assert_valid(records, validator)
    by_order = {r["commerce"]["order"]["purchaseID"]: r for r in records}
    assert list(by_order) == ["O-1", "O-2", "O-3"]  # order of first appearance
    o1 = by_order["O-1"]
    assert [i["SKU"] for i in o1["productListItems"]] == ["SKU-1", "SKU-2", "SKU-4"]
    assert [i["quantity"] for i in o1["productListItems"]] == [1, 2, 3]
    assert o1["commerce"]["order"]["priceTotal"] == 10.4  # 10.10 + 0.20 + 0.10, no float noise
    assert o1["productListItems"][1]["productCategories"] == [
        {"categoryID": "home-kitchen", "categoryName": "Home & Kitchen"}
    ]
    assert by_order["O-2"]["commerce"]["order"]["currencyCode"] == "USD"  # "usd" normalised
    o3 = by_order["O-3"]["productListItems"][0]
    assert o3["SKU"] == "UNKNOWN" and o3["currencyCode"] == "USD"  # empty cells -> defaults
    assert o3["productCategories"][0]["categoryName"] == "Books"


def test_semicolon_and_bom(tmp_path: Path) -> None:
    summary = import_transactions(
        BAD_INPUT / "semicolon_bom.csv",
        tmp_path,
        customer_col="Kunde",  # header is "kunde" after the BOM: matched case-insensitively
        date_col="datum",
        amount_col="betrag",
        currency="EUR",
    )
    assert summary.delimiter == "semicolon"
    assert summary.rows_imported == 3
    records = _records(summary.events_path)
    assert [r["identityMap"]["CRMID"][0]["id"] for r in records] == ["K1", "K2", "K3"]
    assert [r["commerce"]["order"]["priceTotal"] for r in records] == [12.5, 1234.56, 7.0]
    assert {r["commerce"]["order"]["currencyCode"] for r in records} == {"EUR"}


def test_tab_delimited(tmp_path: Path) -> None:
    src = tmp_path / "tabs.tsv"
    src.write_text("customer_id\torder_date\tamount\nA\t2024-01-01\t1.5\n", encoding="utf-8")
    summary = import_transactions(src, tmp_path / "out", **SIMPLE)
    assert summary.delimiter == "tab" and summary.rows_imported == 1


def test_bad_rows_are_rejected_with_line_numbers(tmp_path: Path) -> None:
    summary = import_transactions(BAD_INPUT / "bad_rows.csv", tmp_path, **SIMPLE)
    assert summary.rows_read == 7
    assert summary.rows_imported == 2
    assert summary.rows_rejected == 5
    assert _rejects(summary.rejects_path) == [
        (3, "unparseable_date"),
        (4, "non_numeric_amount"),
        (5, "missing_customer_id"),
        (6, "duplicate_row"),
        (7, "negative_amount"),
    ]
    assert summary.rejects_by_reason["duplicate_row"] == 1
    assert summary.rejects_path == tmp_path / "rejects" / "import-bad_rows.csv"
    kept = [r["identityMap"]["CRMID"][0]["id"] for r in _records(summary.events_path)]
    assert kept == ["C001", "C005"]
    assert any("rejected" in m for m in summary.messages)


def test_line_numbers_follow_the_file_with_blank_and_multiline_rows(tmp_path: Path) -> None:
    src = tmp_path / "tricky.csv"
    src.write_text(
        'customer_id,order_date,amount,note\n\nA,2024-01-01,1,"two\nlines"\nB,bad,2,x\n',
        encoding="utf-8",
    )
    summary = import_transactions(src, tmp_path / "out", **SIMPLE)
    assert _rejects(summary.rejects_path) == [(5, "unparseable_date")]


def test_missing_column_names_it_and_lists_found_columns(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        import_transactions(
            FIXTURES / "simple.csv", tmp_path, **{**SIMPLE, "amount_col": "revenue"}
        )
    message = str(err.value)
    assert "'revenue'" in message
    assert "customer_id, order_date, amount" in message


def test_parquet_input(tmp_path: Path) -> None:
    src = tmp_path / "orders.parquet"
    pq.write_table(
        pa.table(
            {
                "cust": pa.array([101, 102, None, 104], pa.int64()),
                "ordered_at": pa.array(
                    [datetime(2024, 2, 1, 9, 30), datetime(2024, 2, 2), datetime(2024, 2, 3), None],
                    pa.timestamp("us"),
                ),
                "value": pa.array([10.0, 20.5, 3.0, 4.0]),
            }
        ),
        src,
    )
    summary = import_transactions(
        src, tmp_path / "out", customer_col="cust", date_col="ordered_at", amount_col="value"
    )
    assert (summary.rows_read, summary.rows_imported) == (4, 2)
    assert _rejects(summary.rejects_path) == [(3, "missing_customer_id"), (4, "unparseable_date")]
    records = _records(summary.events_path)
    assert [r["identityMap"]["CRMID"][0]["id"] for r in records] == ["101", "102"]
    assert records[0]["timestamp"] == "2024-02-01T09:30:00.000Z"


def test_cdnow_whitespace_format(tmp_path: Path, validator: Draft202012Validator) -> None:
    summary = import_transactions(
        FIXTURES / "cdnow_sample.txt",
        tmp_path,
        customer_col="customer_id",
        date_col="date",
        amount_col="amount",
        quantity_col="quantity",
        date_format="%Y%m%d",
        column_names=CDNOW_COLUMNS,
    )
    assert summary.delimiter == "whitespace"
    assert (summary.rows_read, summary.rows_imported, summary.orders) == (8, 8, 8)
    records = _records(summary.events_path)
    _assert_valid(records, validator)
    assert records[0]["identityMap"]["CRMID"][0]["id"] == "00001"  # leading zeros kept
    assert records[0]["timestamp"] == "1997-01-01T00:00:00.000Z"
    assert records[2]["productListItems"][0]["quantity"] == 5
    # without column names the first data line is taken as the header, and the hint says so
    with pytest.raises(UserError, match="header-less"):
        import_transactions(
            FIXTURES / "cdnow_sample.txt", tmp_path, customer_col="customer_id", date_col="date",
            amount_col="amount",
        )  # fmt: skip


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_reimport_is_byte_identical(tmp_path: Path, fmt: str) -> None:
    kwargs = {**SIMPLE, "fmt": fmt}
    first = import_transactions(BAD_INPUT / "bad_rows.csv", tmp_path / "a", **kwargs)
    second = import_transactions(BAD_INPUT / "bad_rows.csv", tmp_path / "b", **kwargs)
    again = import_transactions(BAD_INPUT / "bad_rows.csv", tmp_path / "a", **kwargs)
    assert first.events_path.read_bytes() == second.events_path.read_bytes()
    assert first.events_path.read_bytes() == again.events_path.read_bytes()
    assert first.rejects_path.read_bytes() == second.rejects_path.read_bytes()


def test_reimport_in_other_format_leaves_no_stale_twin(tmp_path: Path) -> None:
    import_transactions(FIXTURES / "simple.csv", tmp_path, **SIMPLE, fmt="jsonl")
    import_transactions(FIXTURES / "simple.csv", tmp_path, **SIMPLE, fmt="parquet")
    assert sorted(p.name for p in (tmp_path / "events").iterdir()) == ["orders-simple.parquet"]


def test_order_id_reused_by_another_customer_is_rejected(tmp_path: Path) -> None:
    src = tmp_path / "conflict.csv"
    src.write_text(
        "order,customer_id,order_date,amount\n1,A,2024-01-01,5\n1,B,2024-01-01,6\n2,B,2024-01-02,7\n",
        encoding="utf-8",
    )
    summary = import_transactions(src, tmp_path / "out", **SIMPLE, order_col="order")
    assert summary.orders == 2
    assert _rejects(summary.rejects_path) == [(3, "order_customer_mismatch")]


def test_future_dates_and_bad_quantities_are_rejected(tmp_path: Path) -> None:
    tomorrow = (date.today() + timedelta(days=2)).isoformat()
    src = tmp_path / "misc.csv"
    src.write_text(
        f"customer_id,order_date,amount,qty\nA,{tomorrow},5,1\nB,2024-01-01,5,1.5\n"
        "C,2024-01-01,5,0\nD,2024-01-01,5,2\n",
        encoding="utf-8",
    )
    summary = import_transactions(src, tmp_path / "out", **SIMPLE, quantity_col="qty")
    assert _rejects(summary.rejects_path) == [
        (2, "future_date"),
        (3, "non_integer_quantity"),
        (4, "non_positive_quantity"),
    ]


def test_unreadable_inputs_raise_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        import_transactions(tmp_path / "nope.csv", tmp_path, **SIMPLE)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        import_transactions(empty, tmp_path, **SIMPLE)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("customer_id,order_date,amount\nJos\xe9,2024-01-01,1\n".encode("latin-1"))
    with pytest.raises(UserError, match="UTF-8"):
        import_transactions(latin, tmp_path, **SIMPLE)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserError, match="Parquet"):
        import_transactions(broken, tmp_path, **SIMPLE)
    with pytest.raises(UserError, match="currency"):
        import_transactions(FIXTURES / "simple.csv", tmp_path, **SIMPLE, currency="dollars")
