"""Tests for the synthetic XDM generator and the shared event writer (profile_enrichment.generate)."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from profile_enrichment.errors import UserError
from profile_enrichment.generate import PopulationParams, generate
from profile_enrichment.xdm_events import (
    EVENT_SCHEMA,
    EVENT_TYPES,
    check_event_rules,
    drop_nulls,
    event_id,
    parquet_rows_as_records,
    sha256_email,
    table_to_json_lines,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
EVENT_SCHEMA_PATH = SHARED / "xdm" / "experience_event.schema.json"

ARGS = {"customers": 1500, "days": 150, "start_date": date(2024, 1, 1)}
SMALL = {"chunk_customers": 500, "events_per_file": 25_000}  # several chunks and files


def _format_checker() -> FormatChecker:
    """The draft 2020-12 format checker, plus date-time/uri checks if their extras are missing.

    python-jsonschema only asserts ``date-time`` and ``uri*`` when rfc3339-validator / rfc3987
    are installed; without them those formats would silently pass.
    """
    checker = FormatChecker()
    if "date-time" not in checker.checkers:

        @checker.checks("date-time", raises=ValueError)
        def _date_time(value: object) -> bool:
            if not isinstance(value, str):
                return True
            rfc3339 = r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
            if not re.fullmatch(rfc3339, value):
                raise ValueError(value)
            datetime.fromisoformat(value.replace("z", "Z"))
            return True

    if "uri-reference" not in checker.checkers:

        @checker.checks("uri-reference")
        def _uri_reference(value: object) -> bool:
            return not isinstance(value, str) or not re.search(r"\s", value)

    return checker


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    if not EVENT_SCHEMA_PATH.exists():
        pytest.fail(f"shared XDM schema not found at {EVENT_SCHEMA_PATH}")
    schema = json.loads(EVENT_SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=_format_checker())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated outputs: two parquet runs (1 vs 2 workers), another seed, two JSONL runs."""
    base = tmp_path_factory.mktemp("gen")
    out = {name: base / name for name in ("pq_a", "pq_b", "pq_other", "jl_a", "jl_b")}
    generate(seed=11, out_dir=out["pq_a"], workers=1, **ARGS, **SMALL)
    generate(seed=11, out_dir=out["pq_b"], workers=2, **ARGS, **SMALL)
    generate(seed=12, out_dir=out["pq_other"], workers=1, **ARGS, **SMALL)
    generate(seed=11, out_dir=out["jl_a"], fmt="jsonl", workers=1, **ARGS, **SMALL)
    generate(seed=11, out_dir=out["jl_b"], fmt="jsonl", workers=1, **ARGS, **SMALL)
    return out


@pytest.fixture(scope="module")
def pq_records(runs: dict[str, Path]) -> list[dict]:
    """All Parquet events of run ``pq_a`` as JSON-like records (nulls dropped, maps as dicts)."""
    return parquet_rows_as_records(_events(runs["pq_a"]).to_pylist())


@pytest.fixture(scope="module")
def jsonl_records(runs: dict[str, Path]) -> list[dict]:
    return _jsonl_events(runs["jl_a"])


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _events(root: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((root / "events").glob("*.parquet")))


def _jsonl_events(root: Path) -> list[dict]:
    return [
        json.loads(line)
        for p in sorted((root / "events").glob("*.jsonl"))
        for line in p.read_text(encoding="utf-8").splitlines()
    ]


def _sample(records: list[dict], per_type: int = 150) -> list[dict]:
    """Up to ``per_type`` records of each event type, spread over the file."""
    by_type: dict[str, list[dict]] = {}
    for r in records:
        by_type.setdefault(r["eventType"], []).append(r)
    out = []
    for items in by_type.values():
        step = max(1, len(items) // per_type)
        out.extend(items[::step][:per_type])
    return out


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_for_every_file(runs: dict[str, Path]) -> None:
    a, b = _files(runs["pq_a"]), _files(runs["pq_b"])
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.startswith("events/")]) > 1, "expected several event files"
    for name in a:
        assert a[name] == b[name], f"{name} differs between two runs with the same seed"


def test_jsonl_is_deterministic(runs: dict[str, Path]) -> None:
    a, b = _files(runs["jl_a"]), _files(runs["jl_b"])
    assert sorted(a) == sorted(b)
    assert all(a[k] == b[k] for k in a)


def test_different_seed_gives_different_data(runs: dict[str, Path]) -> None:
    a, c = _files(runs["pq_a"]), _files(runs["pq_other"])
    assert a["events/part-00000.parquet"] != c["events/part-00000.parquet"]
    assert a["ground_truth/customers.parquet"] != c["ground_truth/customers.parquet"]


def test_jsonl_and_parquet_hold_the_same_events(
    pq_records: list[dict], jsonl_records: list[dict]
) -> None:
    from_parquet, from_jsonl = pq_records, jsonl_records
    assert len(from_parquet) == len(from_jsonl)
    for i in range(0, len(from_jsonl), 997):
        assert from_parquet[i] == from_jsonl[i]


# --------------------------------------------------------------------------- layout


def test_output_layout(runs: dict[str, Path]) -> None:
    root = runs["pq_a"]
    names = set(_files(root))
    for required in (
        "events/part-00000.parquet",
        "events/part-00001.parquet",
        "profiles/part-00000.parquet",
        "catalog/products.parquet",
        "ground_truth/customers.parquet",
        "ground_truth/params.json",
        "_generator.json",
    ):
        assert required in names
    assert not [n for n in names if n.endswith(".tmp")]
    assert {n for n in _files(runs["jl_a"]) if n.startswith(("events/", "profiles/"))} >= {
        "events/part-00000.jsonl",
        "profiles/part-00000.jsonl",
    }
    for path in sorted((root / "events").glob("*.parquet")):
        assert pq.read_schema(path).equals(EVENT_SCHEMA, check_metadata=False)
    catalog = pq.read_table(root / "catalog" / "products.parquet")
    assert catalog.column_names == [
        "sku",
        "product_name",
        "category_id",
        "category_name",
        "base_price",
        "currency_code",
    ]
    assert catalog.num_rows == PopulationParams().n_skus


def test_rerun_removes_stale_parts(tmp_path: Path) -> None:
    generate(600, 60, 1, tmp_path, chunk_customers=200, events_per_file=3_000, workers=1)
    assert len(list((tmp_path / "events").glob("part-*.parquet"))) > 1
    (tmp_path / "events" / "orders-keep.parquet").write_bytes(b"imported file")
    generate(50, 60, 1, tmp_path, fmt="jsonl", workers=1)
    assert sorted(p.name for p in (tmp_path / "events").iterdir()) == [
        "orders-keep.parquet",
        "part-00000.jsonl",
    ]


# --------------------------------------------------------------------------- XDM validity


def test_parquet_events_validate_against_xdm_schema(
    pq_records: list[dict], validator: Draft202012Validator
) -> None:
    records = _sample(pq_records)
    assert {r["eventType"] for r in records} == set(EVENT_TYPES)
    for record in records:
        errors = [e.message for e in validator.iter_errors(record)]
        assert not errors, (record, errors)
        assert not check_event_rules(record), record


def test_jsonl_events_validate_and_never_hold_nulls(
    runs: dict[str, Path], jsonl_records: list[dict], validator: Draft202012Validator
) -> None:
    records = jsonl_records
    text = (runs["jl_a"] / "events" / "part-00000.jsonl").read_text(encoding="utf-8")
    assert "null" not in text and "[]" not in text and "{}" not in text
    for record in _sample(records):
        errors = [e.message for e in validator.iter_errors(record)]
        assert not errors, (record, errors)
        assert not check_event_rules(record), record


def test_exactly_one_primary_identity_per_event(runs: dict[str, Path]) -> None:
    ident = _events(runs["pq_a"]).column("identityMap").combine_chunks()
    lists = ident.items  # one list of identity items per map entry
    primary = lists.flatten().field("primary").to_numpy(zero_copy_only=False).astype(np.int64)
    per_entry = np.add.reduceat(primary, lists.offsets.to_numpy()[:-1])
    per_event = np.add.reduceat(per_entry, ident.offsets.to_numpy()[:-1])
    assert (np.diff(lists.offsets.to_numpy()) >= 1).all()
    assert (per_event == 1).all()


def test_event_shapes_by_type(pq_records: list[dict]) -> None:
    records = pq_records
    seen_anonymous = False
    for r in records:
        et, ids = r["eventType"], r["identityMap"]
        if et.startswith("directMarketing."):
            assert set(ids) == {"CRMID", "Email_LC_SHA256"}
            assert set(r) == {"_id", "timestamp", "eventType", "identityMap"}
            continue
        if "CRMID" not in ids:
            seen_anonymous = True
            assert set(ids) == {"ECID"}
            assert ids["ECID"][0] == {
                "id": ids["ECID"][0]["id"],
                "authenticatedState": "ambiguous",
                "primary": True,
            }
        else:
            assert ids["CRMID"][0]["authenticatedState"] == "authenticated"
            assert ids["CRMID"][0]["primary"] is True and "ECID" in ids
        if et == "web.webpagedetails.pageViews":
            assert r["web"]["webPageDetails"]["pageViews"] == {"value": 1.0}
            assert "commerce" not in r and "productListItems" not in r
        elif et in ("commerce.productViews", "commerce.productListAdds"):
            assert len(r["productListItems"]) == 1
        elif et == "commerce.purchases":
            assert r["commerce"]["purchases"] == {"value": 1.0}
            assert r["commerce"]["order"]["currencyCode"] == "USD"
            assert "CRMID" in ids and "Email_LC_SHA256" in ids
    assert seen_anonymous


def test_order_totals_equal_line_sums_to_the_cent(runs: dict[str, Path]) -> None:
    con = duckdb.connect()
    rows = con.execute(
        f"""
        select commerce.order.priceTotal as total,
               list_sum(list_transform(productListItems, lambda x: x.priceTotal)) as lines,
               len(productListItems) as n_lines
        from read_parquet('{runs["pq_a"]}/events/*.parquet')
        where eventType = 'commerce.purchases'
        """
    ).fetchall()
    assert len(rows) > 500
    assert all(round(total * 100) == round(lines * 100) for total, lines, _ in rows)
    assert max(n for _, _, n in rows) > 1, "expected some multi-line orders"
    assert min(total for total, _, _ in rows) > 0


def test_ids_are_unique_and_colon_free(runs: dict[str, Path]) -> None:
    events = _events(runs["pq_a"])
    ids = events.column("_id")
    assert pc.count_distinct(ids).as_py() == events.num_rows
    assert not pc.any(pc.match_substring(ids, ":")).as_py()
    assert event_id("orders.csv", "O:1") == event_id("orders.csv", "O:1")
    assert ":" not in event_id("a:b", "c")


# --------------------------------------------------------------------------- privacy


def test_raw_emails_only_in_ground_truth(runs: dict[str, Path]) -> None:
    truth = pq.read_table(runs["pq_a"] / "ground_truth" / "customers.parquet")
    emails = [e for e in truth.column("email").to_pylist() if e]
    assert emails and any(e != e.lower() for e in emails), "expected some mixed-case raw e-mails"
    assert truth.column("email_sha256").to_pylist()[: len(emails)] is not None
    for e, h in zip(truth.column("email").to_pylist(), truth.column("email_sha256").to_pylist(), strict=True):  # fmt: skip
        assert (e is None) == (h is None)
        if e:
            assert h == sha256_email(e) == sha256_email(f"  {e.upper()} ")
    for sub in ("events", "profiles"):
        for path in sorted((runs["pq_a"] / sub).glob("*.parquet")):
            text = "\n".join(table_to_json_lines(pq.read_table(path)).to_pylist())
            assert "@" not in text, f"something e-mail-like in {path}"
        for path in sorted((runs["jl_a"] / sub).glob("*.jsonl")):
            assert b"@" not in path.read_bytes()


# --------------------------------------------------------------------------- ground truth


@pytest.fixture(scope="module")
def con(runs: dict[str, Path]) -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    root = runs["pq_a"]
    c.execute(f"create view events as select * from read_parquet('{root}/events/*.parquet')")
    c.execute(
        f"create view truth as select * from read_parquet('{root}/ground_truth/customers.parquet')"
    )
    c.execute(f"create view profiles as select * from read_parquet('{root}/profiles/*.parquet')")
    c.execute(
        """
        create view person_events as
        select identityMap['CRMID'][1].id as crm_id, identityMap['ECID'][1].id as ecid,
               eventType as event_type, timestamp::timestamptz as event_at,
               commerce.order.priceTotal as order_total
        from events
        """
    )
    return c


def test_ground_truth_matches_events(con: duckdb.DuckDBPyConnection, runs: dict[str, Path]) -> None:
    mismatches = con.execute(
        """
        with purchases as (
            select crm_id, count(*) as n, sum(order_total) as revenue, min(event_at) as first_at
            from person_events where event_type = 'commerce.purchases' group by 1
        )
        select count(*) from truth t left join purchases p using (crm_id)
        where coalesce(p.n, 0) != t.n_purchases
           or abs(coalesce(p.revenue, 0) - t.total_revenue) > 0.005
           or (t.n_purchases > 0 and cast(p.first_at at time zone 'UTC' as date) != t.join_date)
        """
    ).fetchone()[0]
    assert mismatches == 0
    n_customers, n_known, n_buyers = con.execute(
        "select count(*), count(crm_id), count(*) filter (where is_buyer) from truth"
    ).fetchone()
    assert n_customers == ARGS["customers"]
    assert 0.2 <= 1 - n_known / n_customers <= 0.3  # never-logged-in visitors
    assert con.execute("select count(*) from profiles").fetchone()[0] == n_known
    assert n_buyers > 0.5 * n_customers
    bad = con.execute(
        """
        select count(*) from truth
        where (crm_id is null) != (email is null)
           or (crm_id is null and (n_purchases > 0 or is_buyer))
           or (is_buyer != (n_purchases > 0))
           or (is_alive_at_end = (dropout_date is not null))
           or (is_buyer and (purchase_rate_per_day is null or dropout_probability is null
                             or spend_scale is null))
        """
    ).fetchone()[0]
    assert bad == 0
    # every CRMID seen in events is a known profile; anonymous visitors never carry one
    orphans = con.execute(
        """
        select count(*) from (select distinct crm_id from person_events where crm_id is not null)
        where crm_id not in (select crm_id from truth where crm_id is not null)
        """
    ).fetchone()[0]
    assert orphans == 0
    meta = json.loads((runs["pq_a"] / "_generator.json").read_text())
    assert meta["counts"]["events"] == con.execute("select count(*) from events").fetchone()[0]
    assert meta["counts"]["known_customers"] == n_known
    params = json.loads((runs["pq_a"] / "ground_truth" / "params.json").read_text())
    assert params["time_unit"] == "days"
    assert set(params["bgnbd"]) >= {"r", "alpha", "a", "b"}
    assert set(params["gamma_gamma"]) >= {"p", "q", "gamma"}
    assert params["generator_arguments"]["seed"] == 11


def test_population_parameters_are_plausible(con: duckdb.DuckDBPyConnection) -> None:
    p = PopulationParams()
    mean_lambda, mean_p, mean_nu = con.execute(
        "select avg(purchase_rate_per_day), avg(dropout_probability), avg(spend_scale) "
        "from truth where is_buyer"
    ).fetchone()
    assert mean_lambda == pytest.approx(p.r / p.alpha, rel=0.15)
    assert mean_p == pytest.approx(p.a / (p.a + p.b), rel=0.15)
    assert mean_nu == pytest.approx(p.gg_q / p.gg_gamma, rel=0.1)
    aov = con.execute(
        "select avg(order_total) from person_events where event_type = 'commerce.purchases'"
    ).fetchone()[0]
    assert 20 <= aov <= 45  # E[z] = p * gamma / (q - 1) = 30 dollars


def test_join_dates_spread_and_anonymous_browsing_before_login(
    con: duckdb.DuckDBPyConnection,
) -> None:
    first, last = con.execute("select min(join_date), max(join_date) from truth").fetchone()
    assert first < date(2024, 1, 15)
    assert last <= date(2024, 1, 1) + timedelta(days=int(0.8 * ARGS["days"]))
    # some known people have ECID-only events before their first CRMID event
    stitched = con.execute(
        """
        with anon as (select ecid, min(event_at) as first_anon from person_events
                      where crm_id is null group by 1)
        select count(*) from truth t join anon a on a.ecid = t.ecid
        where t.crm_id is not null and a.first_anon < t.join_date::timestamptz
        """
    ).fetchone()[0]
    assert stitched > 50


def test_browsing_signal_follows_purchase_rate_and_dropout(con: duckdb.DuckDBPyConnection) -> None:
    by_intent = con.execute(
        """
        with pv as (select crm_id, count(*) as n from person_events
                    where event_type = 'web.webpagedetails.pageViews' and crm_id is not null
                    group by 1),
        buyers as (select t.*, coalesce(pv.n, 0) as page_views,
                          ntile(2) over (order by purchase_rate_per_day) as half
                   from truth t left join pv using (crm_id) where t.is_buyer)
        select half, avg(page_views / (date '2024-05-30' - join_date + 1)) from buyers
        group by 1 order by 1
        """
    ).fetchall()
    (_, low), (_, high) = by_intent
    assert high > 1.5 * low
    recent = dict(
        con.execute(
            """
            with recent as (select crm_id, count(*) as n from person_events
                            where event_at >= timestamptz '2024-05-01 00:00:00+00'
                              and crm_id is not null group by 1)
            select is_alive_at_end, avg(coalesce(n, 0)) from truth t left join recent using (crm_id)
            where t.is_buyer and t.join_date < date '2024-03-15' group by 1
            """
        ).fetchall()
    )
    assert recent[True] > 2.0 * recent[False]


# --------------------------------------------------------------------------- writer and rules


def _reference_json(row: dict) -> dict:
    """What the JSONL writer must produce: nulls, "", [] and {} dropped, recursively."""

    def clean(v: object) -> object:
        if isinstance(v, list) and v and isinstance(v[0], tuple):
            v = dict(v)
        if isinstance(v, dict):
            out = {k: clean(x) for k, x in v.items()}
            return {k: x for k, x in out.items() if x not in (None, "", [], {})} or None
        if isinstance(v, list):
            return [clean(x) for x in v] or None
        return v

    return clean(row)  # type: ignore[return-value]


def test_json_writer_matches_reference_on_random_nulls() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(300):

        def maybe(value: object, p: float = 0.3) -> object:
            return None if rng.random() < p else value

        rows.append(
            {
                "_id": f"id{i}",
                "timestamp": "2024-01-01T00:00:00.000Z",
                "eventType": maybe('quote"back\\slash\ttab', 0.1) or "x",
                "identityMap": [
                    (
                        "CRMID",
                        [
                            {
                                "id": f"c{i}",
                                "authenticatedState": maybe("ambiguous"),
                                "primary": maybe(True),
                            }
                        ],
                    )
                ],
                "commerce": maybe(
                    {
                        "order": maybe(
                            {
                                "purchaseID": maybe("p"),
                                "priceTotal": maybe(1.25),
                                "currencyCode": maybe(""),
                            }
                        ),
                        "purchases": maybe({"value": maybe(1.0)}),
                        "productViews": None,
                        "productListAdds": maybe({"value": 1.0}),
                        "checkouts": None,
                    }
                ),
                "productListItems": maybe(
                    [
                        {
                            "SKU": "S",
                            "name": maybe("naïve ☃"),
                            "quantity": maybe(2),
                            "priceTotal": 0.1,
                            "currencyCode": "USD",
                            "productCategories": maybe(
                                [{"categoryID": "c", "categoryName": maybe("C")}]
                            ),
                        }
                        for _ in range(int(rng.integers(0, 3)))
                    ]
                ),
                "web": maybe(
                    {"webPageDetails": maybe({"name": maybe("n"), "URL": None, "pageViews": None})}
                ),
            }
        )
    table = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
    lines = table_to_json_lines(table).to_pylist()
    for row, line in zip(rows, lines, strict=True):
        assert json.loads(line) == _reference_json(row)
    # slices keep working (offsets into shared child arrays)
    assert table_to_json_lines(table.slice(17, 40)).to_pylist() == lines[17:57]


def test_check_event_rules_can_fail() -> None:
    event = {
        "_id": "a:b",
        "timestamp": "2024-01-01 00:00:00",
        "eventType": "commerce.purchases",
        "identityMap": {
            "CRMID": [{"id": "1", "primary": True}],
            "ECID": [{"id": "2", "primary": True}],
        },
        "commerce": {"order": {"priceTotal": 10.0}},
        "productListItems": [{"SKU": "x", "priceTotal": 9.99}],
        "web": None,
    }
    problems = " | ".join(check_event_rules(event))
    for expected in ("2 primary", "colon", "RFC 3339", "sum of its line", "$.web is null"):
        assert expected in problems
    assert drop_nulls({"a": None, "b": {"c": None, "d": 1}}) == {"b": {"d": 1}}


def test_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="future"):
        generate(10, 30, 1, tmp_path, start_date=date.today() + timedelta(days=1))
    with pytest.raises(UserError, match="format"):
        generate(10, 30, 1, tmp_path, fmt="csv")
    with pytest.raises(UserError, match="customers"):
        generate(0, 30, 1, tmp_path)
    with pytest.raises(UserError, match="n_categories"):
        generate(10, 30, 1, tmp_path, params=PopulationParams(n_categories=40))
