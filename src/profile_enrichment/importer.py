"""Import an order/transaction file (CSV, whitespace-separated text or Parquet) as XDM purchases.

Why: most shops can export "customer, date, amount" rows but not XDM. This turns such a file
into ``commerce.purchases`` ExperienceEvents with the same schema and writer the generator
uses (:mod:`profile_enrichment.xdm_events`), so the dbt project reads imported and synthetic
data the same way.

* identityMap: ``CRMID`` = the customer column (primary, authenticated).
* Rows sharing an order id become one event with several ``productListItems``; without an
  order column every row is one order whose ``purchaseID`` is a hash of the row.
* ``amount`` is the line total (not a unit price); the order total is the sum of its lines.
* Bad rows are not fatal: each is written to ``rejects/import-<stem>.csv`` with its line number
  (header = line 1; for Parquet and header-less files, the row number) and a reason code.
* Output is deterministic: re-importing the same file gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from profile_enrichment.errors import UserError
from profile_enrichment.xdm_events import (
    EVENT_SCHEMA,
    MAX_EVENT_BYTES,
    event_id,
    format_timestamps_ms,
    table_to_json_lines,
    write_table,
)

__all__ = ["CDNOW_COLUMNS", "REJECT_REASONS", "ImportSummary", "import_transactions"]

#: Column names for the header-less CDNOW master file (customer, YYYYMMDD date, quantity, amount).
CDNOW_COLUMNS: tuple[str, ...] = ("customer_id", "date", "quantity", "amount")

#: Reason codes written to the rejects file.
REJECT_REASONS: dict[str, str] = {
    "missing_customer_id": "the customer id is empty",
    "unparseable_date": "the date could not be parsed (pass date_format, e.g. %Y%m%d)",
    "future_date": "the date is in the future; AEP rejects future event timestamps",
    "non_numeric_amount": "the amount is not a finite number",
    "negative_amount": "the amount is negative (refunds are not purchases)",
    "non_integer_quantity": "the quantity is not a whole number",
    "non_positive_quantity": "the quantity is zero or negative",
    "missing_order_id": "the order id is empty",
    "invalid_currency": "the currency is not a 3-letter ISO 4217 code",
    "wrong_field_count": "the row has a different number of fields than the header",
    "duplicate_row": "an exact duplicate of an earlier row (the first one is kept)",
    "order_customer_mismatch": "the order id was already used by another customer",
    "order_currency_mismatch": "the order's lines use different currencies",
    "event_too_large": "the order's event would exceed AEP's 10 KB ExperienceEvent limit",
}

_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "whitespace": "whitespace"}
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_DECIMAL_COMMA_RE = re.compile(r"^[+-]?\d+,\d{1,2}$")
_EU_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(\.\d{3})+(,\d+)?$")
_CURRENCY_SYMBOLS = "$€£¥"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXTRA_DATE_FORMATS = ("%Y/%m/%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M")


@dataclass
class ImportSummary:
    """What :func:`import_transactions` read, kept and wrote."""

    rows_read: int
    rows_imported: int
    rows_rejected: int
    orders: int
    events_written: int
    rejects_path: Path | None
    events_path: Path | None = None
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    delimiter: str | None = None
    messages: list[str] = field(default_factory=list)


@dataclass
class _Source:
    header: list[str]
    rows: list[list[Any]]
    lines: list[int]
    delimiter: str | None
    has_header: bool


@dataclass
class _Line:
    line: int
    customer: str
    ts_ms: int
    amount: float
    order: str | None
    quantity: int
    sku: str
    category: str
    currency: str
    raw: tuple[Any, ...]


# --------------------------------------------------------------------------- reading


def _unreadable(path: Path, why: str, hint: str | None = None) -> UserError:
    return UserError(f"cannot read {path}: {why}", hint)


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    with path.open("rb") as fh:
        return fh.read(4) == b"PAR1"


def _read_parquet(path: Path, column_names: Sequence[str] | None) -> _Source:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, f"not a valid Parquet file ({exc})") from exc
    header = list(table.column_names)
    if column_names is not None:
        if len(column_names) != len(header):
            raise UserError(
                f"column_names has {len(column_names)} names but {path.name} has "
                f"{len(header)} columns: {', '.join(header)}"
            )
        header = list(column_names)
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = [list(r) for r in zip(*columns, strict=True)] if columns else []
    return _Source(header, rows, list(range(1, len(rows) + 1)), None, has_header=False)


def _sniff_delimiter(first_line: str) -> str:
    """Pick comma, semicolon or tab by count outside quotes; whitespace if none but spaces split."""
    counts = dict.fromkeys((",", ";", "\t"), 0)
    quoted = False
    for ch in first_line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda d: counts[d])
    if counts[best] > 0:
        return best
    return "whitespace" if len(first_line.split()) > 1 else ","


def _iter_records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first physical line number, fields) per non-blank record."""
    if delimiter == "whitespace":
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if fields:
                yield number, fields
        return
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    previous = 0
    for fields in reader:
        start = previous + 1
        previous = reader.line_num
        if not fields or all(f.strip() == "" for f in fields):
            continue
        yield start, fields


def _read_text(path: Path, delimiter: str | None, column_names: Sequence[str] | None) -> _Source:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc.strerror or str(exc)) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _unreadable(
            path,
            f"not UTF-8 (byte {exc.start})",
            "re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8",
        ) from exc
    first = next((ln for ln in text.splitlines() if ln.strip()), None)
    if first is None:
        raise UserError(f"{path} is empty", "export the orders again, with a header row")
    if delimiter is None:
        delimiter = _sniff_delimiter(first)
    elif delimiter not in _DELIMITERS:
        raise UserError(
            f"delimiter must be one of ',', ';', '\\t' or 'whitespace', got {delimiter!r}"
        )
    records = _iter_records(text, delimiter)
    if column_names is None:
        _, header = next(records)
        header = [h.strip() for h in header]
        has_header = True
    else:
        header, has_header = list(column_names), False
    rows: list[list[Any]] = []
    lines: list[int] = []
    try:
        for number, fields in records:
            lines.append(number)
            rows.append(fields)
    except csv.Error as exc:
        raise _unreadable(path, f"malformed CSV near line {len(lines) + 2}: {exc}") from exc
    return _Source(header, rows, lines, delimiter, has_header)


def _resolve(header: list[str], wanted: dict[str, str | None]) -> dict[str, int]:
    """Map role -> column index; exact name first, then a unique case-insensitive match."""
    index: dict[str, int] = {}
    missing: list[str] = []
    folded = [h.strip().casefold() for h in header]
    for role, name in wanted.items():
        if name is None:
            continue
        if header.count(name) == 1:
            index[role] = header.index(name)
        elif folded.count(name.strip().casefold()) == 1:
            index[role] = folded.index(name.strip().casefold())
        elif header.count(name) > 1:
            raise UserError(f"column {name!r} ({role}) appears more than once in the header")
        else:
            missing.append(f"{name!r} ({role})")
    if missing:
        raise UserError(
            f"column{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found in the file; "
            f"columns found: {', '.join(header) or '(none)'}",
            "map the columns with the --*-col options (names are matched case-insensitively)"
            + (
                "; the first line looks like data, so pass column names for a header-less file"
                if header and all(_looks_numeric(h) for h in header)
                else ""
            ),
        )
    return index


def _looks_numeric(text: str) -> bool:
    try:
        float(text.replace(",", "."))
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- parsing


def _to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _parse_date(value: Any, date_format: str | None, cache: dict[Any, int | None]) -> int | None:
    """Epoch ms (UTC) or None. A date without a time is midnight UTC; naive times are UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return _to_ms(value)
    if isinstance(value, date):
        return _to_ms(datetime(value.year, value.month, value.day))
    key = value
    if key in cache:
        return cache[key]
    text = str(value).strip()
    result: int | None = None
    if text:
        if date_format is not None:
            try:
                result = _to_ms(datetime.strptime(text, date_format))
            except ValueError:
                result = None
        else:
            try:
                result = _to_ms(datetime.fromisoformat(text.replace("z", "Z")))
            except ValueError:
                for fmt in _EXTRA_DATE_FORMATS:
                    try:
                        result = _to_ms(datetime.strptime(text, fmt))
                        break
                    except ValueError:
                        continue
    cache[key] = result
    return result


def _parse_amount(value: Any) -> float | None:
    """A finite float, or None. Accepts 1234.5, "1,234.50", "12,50", "1.234,50", "$12.50"."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip().strip(_CURRENCY_SYMBOLS).strip().replace("\u00a0", "")
        if not text or "_" in text:
            return None
        try:
            number = float(text)
        except ValueError:
            if _THOUSANDS_RE.match(text):
                text = text.replace(",", "")
            elif _EU_THOUSANDS_RE.match(text):
                text = text.replace(".", "").replace(",", ".")
            elif _DECIMAL_COMMA_RE.match(text):
                text = text.replace(",", ".")
            else:
                return None
            number = float(text)
    return number if math.isfinite(number) else None


def _parse_quantity(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    number = _parse_amount(value)
    if number is None or number != int(number):
        return None
    return int(number)


def _text(value: Any) -> str:
    """A cell as trimmed text; integral floats (Parquet ids read as doubles) lose the '.0'."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")
    return slug or "uncategorized"


# --------------------------------------------------------------------------- import


def import_transactions(
    path: Path,
    out_dir: Path,
    *,
    customer_col: str,
    date_col: str,
    amount_col: str,
    order_col: str | None = None,
    quantity_col: str | None = None,
    sku_col: str | None = None,
    category_col: str | None = None,
    currency_col: str | None = None,
    currency: str = "USD",
    date_format: str | None = None,
    fmt: str = "parquet",
    delimiter: str | None = None,
    column_names: Sequence[str] | None = None,
) -> ImportSummary:
    """Import ``path`` as XDM ``commerce.purchases`` events into ``out_dir/events/orders-<stem>.<fmt>``.

    ``delimiter`` is sniffed (comma, semicolon, tab, else whitespace) unless given; pass
    ``column_names`` for a header-less file (e.g. :data:`CDNOW_COLUMNS` with
    ``date_format="%Y%m%d"`` for the CDNOW master file). Rejected rows go to
    ``out_dir/rejects/import-<stem>.csv``.
    """
    path, out_dir = Path(path), Path(out_dir)
    if fmt not in ("parquet", "jsonl"):
        raise UserError(f"format must be 'parquet' or 'jsonl', got {fmt!r}")
    currency = (currency or "").strip().upper()
    if not _CURRENCY_RE.match(currency):
        raise UserError(f"currency must be a 3-letter ISO 4217 code like USD, got {currency!r}")
    if not path.exists():
        raise UserError(f"file not found: {path}")
    if not path.is_file():
        raise UserError(f"not a file: {path}")
    try:
        source = (
            _read_parquet(path, column_names)
            if _is_parquet(path)
            else _read_text(path, delimiter, column_names)
        )
    except PermissionError as exc:
        raise _unreadable(path, "permission denied") from exc

    roles = {
        "customer": customer_col,
        "date": date_col,
        "amount": amount_col,
        "order": order_col,
        "quantity": quantity_col,
        "sku": sku_col,
        "category": category_col,
        "currency": currency_col,
    }
    col = _resolve(source.header, roles)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "file"
    events_path = out_dir / "events" / f"orders-{stem}.{fmt}"
    rejects_path = out_dir / "rejects" / f"import-{stem}.csv"
    for other in ("parquet", "jsonl"):  # a re-import must not leave a stale twin behind
        (out_dir / "events" / f"orders-{stem}.{other}").unlink(missing_ok=True)

    rejects: list[tuple[int, str, str, str]] = []
    good = _validate_rows(source, col, currency, date_format, rejects)
    orders = _group_orders(good, path.name, has_order_col=order_col is not None, rejects=rejects)
    table = _events_table(orders, path.name)
    if table.num_rows:
        sizes = [len(s.encode("utf-8")) for s in table_to_json_lines(table).to_pylist()]
        too_big = {i for i, size in enumerate(sizes) if size > MAX_EVENT_BYTES}
        if too_big:
            for i in sorted(too_big):
                for ln in orders[i][1]:
                    rejects.append((ln.line, "event_too_large", "", f"{len(orders[i][1])} lines"))
            orders = [o for i, o in enumerate(orders) if i not in too_big]
            table = _events_table(orders, path.name)

    messages: list[str] = []
    if not source.rows:
        messages.append(f"{path.name} has no data rows (header only); nothing was imported")
    if table.num_rows:
        write_table(table, events_path, fmt)
    elif source.rows:
        messages.append("no row could be imported; see the rejects file")
    _write_rejects(rejects_path, rejects)
    by_reason: dict[str, int] = {}
    for _, reason, _, _ in rejects:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    rows_imported = sum(len(lines) for _, lines in orders)
    if rejects:
        top = ", ".join(f"{k}={v}" for k, v in sorted(by_reason.items()))
        messages.append(f"{len(rejects)} row(s) rejected ({top}); see {rejects_path}")
    return ImportSummary(
        rows_read=len(source.rows),
        rows_imported=rows_imported,
        rows_rejected=len(rejects),
        orders=len(orders),
        events_written=table.num_rows,
        rejects_path=rejects_path,
        events_path=events_path if table.num_rows else None,
        rejects_by_reason=dict(sorted(by_reason.items())),
        delimiter=_DELIMITERS[source.delimiter] if source.delimiter else None,
        messages=messages,
    )


def _validate_rows(
    source: _Source,
    col: dict[str, int],
    default_currency: str,
    date_format: str | None,
    rejects: list[tuple[int, str, str, str]],
) -> list[_Line]:
    """Parse and check every row; bad rows go to ``rejects`` (one reason each, first failing)."""
    width = len(source.header)
    date_cache: dict[Any, int | None] = {}
    now_ms = _to_ms(datetime.now(UTC))
    seen: dict[tuple[Any, ...], int] = {}
    good: list[_Line] = []
    for line, row in zip(source.lines, source.rows, strict=True):
        if len(row) > width and all(str(v).strip() == "" for v in row[width:]):
            row = row[:width]  # tolerate trailing delimiters
        if len(row) != width:
            rejects.append((line, "wrong_field_count", "", f"{len(row)} fields, expected {width}"))
            continue

        def cell(role: str, row: list[Any] = row) -> Any:
            return row[col[role]] if role in col else None

        customer = _text(cell("customer"))
        if not customer:
            rejects.append((line, "missing_customer_id", source.header[col["customer"]], ""))
            continue
        raw_date = cell("date")
        ts = _parse_date(raw_date, date_format, date_cache)
        if ts is None:
            rejects.append((line, "unparseable_date", source.header[col["date"]], _text(raw_date)))
            continue
        if ts > now_ms:
            rejects.append((line, "future_date", source.header[col["date"]], _text(raw_date)))
            continue
        raw_amount = cell("amount")
        amount = _parse_amount(raw_amount)
        if amount is None:
            rejects.append(
                (line, "non_numeric_amount", source.header[col["amount"]], _text(raw_amount))
            )
            continue
        if amount < 0:
            rejects.append(
                (line, "negative_amount", source.header[col["amount"]], _text(raw_amount))
            )
            continue
        quantity = 1
        if "quantity" in col:
            raw_q = cell("quantity")
            q = _parse_quantity(raw_q)
            if q is None:
                name = source.header[col["quantity"]]
                rejects.append((line, "non_integer_quantity", name, _text(raw_q)))
                continue
            if q <= 0:
                name = source.header[col["quantity"]]
                rejects.append((line, "non_positive_quantity", name, _text(raw_q)))
                continue
            quantity = q
        order = None
        if "order" in col:
            order = _text(cell("order"))
            if not order:
                rejects.append((line, "missing_order_id", source.header[col["order"]], ""))
                continue
        cur = default_currency
        if "currency" in col:
            cur = _text(cell("currency")).upper() or default_currency
            if not _CURRENCY_RE.match(cur):
                name = source.header[col["currency"]]
                rejects.append((line, "invalid_currency", name, _text(cell("currency"))))
                continue
        raw = tuple(_text(v) for v in row)
        if raw in seen:
            rejects.append((line, "duplicate_row", "", f"same as line {seen[raw]}"))
            continue
        seen[raw] = line
        good.append(
            _Line(
                line=line,
                customer=customer,
                ts_ms=ts,
                amount=amount,
                order=order,
                quantity=quantity,
                sku=_text(cell("sku")) or "UNKNOWN",
                category=_text(cell("category")) or "uncategorized",
                currency=cur,
                raw=raw,
            )
        )
    return good


def _group_orders(
    good: list[_Line],
    file_name: str,
    *,
    has_order_col: bool,
    rejects: list[tuple[int, str, str, str]],
) -> list[tuple[str, list[_Line]]]:
    """(purchaseID, lines) per order, in order of first appearance in the file."""
    if not has_order_col:
        return [("R" + event_id(file_name, *ln.raw)[:20], [ln]) for ln in good]
    orders: dict[str, list[_Line]] = {}
    for ln in good:
        assert ln.order is not None
        lines = orders.setdefault(ln.order, [])
        if lines and ln.customer != lines[0].customer:
            detail = (
                f"order {ln.order} belongs to customer {lines[0].customer} (line {lines[0].line})"
            )
            rejects.append((ln.line, "order_customer_mismatch", "", detail))
            continue
        if lines and ln.currency != lines[0].currency:
            detail = f"order {ln.order} is in {lines[0].currency} (line {lines[0].line})"
            rejects.append((ln.line, "order_currency_mismatch", "", detail))
            continue
        lines.append(ln)
    return list(orders.items())


def _events_table(orders: list[tuple[str, list[_Line]]], file_name: str) -> pa.Table:
    """One ``commerce.purchases`` event per order, in :data:`EVENT_SCHEMA`."""
    ids: list[str] = []
    ts: list[int] = []
    identity: list[Any] = []
    commerce: list[dict[str, Any]] = []
    items: list[list[dict[str, Any]]] = []
    for purchase_id, lines in orders:
        first = lines[0]
        ids.append(event_id(file_name, purchase_id))
        ts.append(min(ln.ts_ms for ln in lines))
        identity.append(
            [
                (
                    "CRMID",
                    [
                        {
                            "id": first.customer,
                            "authenticatedState": "authenticated",
                            "primary": True,
                        }
                    ],
                )
            ]
        )
        total = round(math.fsum(ln.amount for ln in lines), 6)
        commerce.append(
            {
                "order": {
                    "purchaseID": purchase_id,
                    "priceTotal": total,
                    "currencyCode": first.currency,
                },
                "purchases": {"value": 1.0},
            }
        )
        items.append(
            [
                {
                    "SKU": ln.sku,
                    "quantity": ln.quantity,
                    "priceTotal": ln.amount,
                    "currencyCode": ln.currency,
                    "productCategories": [
                        {"categoryID": _slug(ln.category), "categoryName": ln.category}
                    ],
                }
                for ln in lines
            ]
        )
    n = len(ids)
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            format_timestamps_ms(pa.array(ts, pa.int64()).to_numpy()),
            pa.array(["commerce.purchases"] * n, pa.string()),
            pa.array(identity, EVENT_SCHEMA.field("identityMap").type),
            pa.array(commerce, EVENT_SCHEMA.field("commerce").type),
            pa.array(items, EVENT_SCHEMA.field("productListItems").type),
            pa.nulls(n, EVENT_SCHEMA.field("web").type),
        ],
        schema=EVENT_SCHEMA,
    )


def _write_rejects(path: Path, rejects: list[tuple[int, str, str, str]]) -> None:
    """Rejects as CSV sorted by line: line_number, reason, column, detail, description."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["line_number", "reason", "column", "detail", "description"])
    for line, reason, column, detail in sorted(rejects, key=lambda r: (r[0], r[1])):
        writer.writerow([line, reason, column, detail, REJECT_REASONS[reason]])
    path.write_text(buffer.getvalue(), encoding="utf-8")
