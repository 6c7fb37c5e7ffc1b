"""XDM profile-attribute export: payloads, records, validation, atomic idempotent batches.

Records are built from the real demo warehouse (copied to tmp, opened read-only) and checked
against the hand-written XDM oracle in shared/xdm with python-jsonschema (format assertion
on), independently of the exporter's own jsonschema-rs validator.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from profile_enrichment.errors import UserError
from profile_enrichment.export import (
    RecordValidator,
    build_record,
    build_records,
    dataset_payload,
    field_group_payload,
    model_insights_schema,
    read_profile_insights,
    record_json_schema,
    schema_payload,
    validate_batch,
    validate_records,
    validate_tenant_id,
    write_batches,
)
from profile_enrichment.export.layout import Field
from profile_enrichment.export.parallel import checked_in_workers
from profile_enrichment.export.pipeline import export_profiles
from profile_enrichment.export.records import (
    _compile,
    _leaf,
    _model_insights,
    read_profile_batches,
)
from profile_enrichment.export.validate import MAX_RECORD_BYTES, serialize

ROOT = Path(__file__).resolve().parents[1]
ORACLE = Path(__file__).resolve().parents[2] / "shared" / "xdm" / "profile_record.schema.json"
TENANT = "acme"
AS_OF = "2025-12-31"
VERSIONS = {"churn": "v1", "clv": "v2"}


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def oracle() -> Draft202012Validator:
    assert ORACLE.is_file(), f"XDM oracle not found at {ORACLE} (CI lays ../shared beside the repo)"
    schema = json.loads(ORACLE.read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def rows(built_warehouse: Path) -> list[dict]:
    """Every profile of the pipeline built on generated data (conftest's built_warehouse)."""
    out = list(read_profile_insights(built_warehouse, batch_size=500))
    assert out, "profile_insights is empty"
    return out


@pytest.fixture(scope="module")
def records(rows) -> list[dict]:
    return list(build_records(rows, TENANT, AS_OF))


def _row(**over) -> dict:
    base = {
        "customer_id": "c1",
        "crm_id": "CRM-1",
        "email_sha256": "a" * 64,
        "ecid": "123",
        "score_date": "2025-12-31",
        "churn_probability": 0.5,
        "churn_score": 50,
        "churn_percentile": 40,
        "churn_bucket": "medium",
        "churn_factors_json": '[{"code":"recency_days","value":3.0,"importance":"high",'
        '"direction":"increases"}]',
        "churn_model_version": "v1",
        "segment_id": 3,
        "segment_name": "Loyal",
        "segment_model_version": "s1",
    }
    base.update(over)
    return base


def _walk(node, path="$"):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def _primaries(record) -> int:
    return sum(i.get("primary") is True for items in record["identityMap"].values() for i in items)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _write(records, out, **kw):
    args = dict(tenant=TENANT, as_of=AS_OF, model_versions=VERSIONS, schema_id="{{SCHEMA_ID}}")
    args.update(kw)
    return write_batches(records, out, **args)


# --------------------------------------------------------------------------------- payloads
def test_field_group_payload_is_fully_typed():
    payload = field_group_payload(TENANT)
    assert payload["meta:intendedToExtend"] == ["https://ns.adobe.com/xdm/context/profile"]
    assert payload["type"] == "object" and payload["title"] and payload["description"]
    (name,) = payload["definitions"]
    assert payload["allOf"] == [{"$ref": f"#/definitions/{name}"}]
    tenant_obj = payload["definitions"][name]["properties"]["_acme"]
    insights = tenant_obj["properties"]["modelInsights"]
    checked = 0

    def check(node, path):
        nonlocal checked
        checked += 1
        for key in ("title", "description", "type"):
            assert node.get(key), f"{path} has no {key}"
        assert node["type"] != "null" and not isinstance(node["type"], list), path
        for k, child in node.get("properties", {}).items():
            check(child, f"{path}.{k}")
        if "items" in node:
            check(node["items"], f"{path}[]")

    check(insights, "modelInsights")
    assert checked > 30
    assert "null" not in json.dumps(payload)


def test_schema_and_dataset_payloads():
    schema = schema_payload(TENANT, "{{FG}}")
    assert schema["meta:class"] == "https://ns.adobe.com/xdm/context/profile"
    refs = [x["$ref"] for x in schema["allOf"]]
    assert refs == [
        "https://ns.adobe.com/xdm/context/profile",
        "https://ns.adobe.com/xdm/context/identitymap",
        "{{FG}}",
    ]
    ds = dataset_payload("{{SID}}")
    assert ds["schemaRef"]["id"] == "{{SID}}"
    assert ds["tags"] == {"unifiedProfile": ["enabled:true"]}


@pytest.mark.parametrize("bad", ["", "ac-me", "a b", "x:y", "ten.ant", "é", None])
def test_tenant_validation_rejects(bad):
    with pytest.raises(UserError):
        validate_tenant_id(bad)
    with pytest.raises(UserError):
        field_group_payload(bad)


def test_tenant_validation_accepts():
    assert validate_tenant_id("acme_Corp1") == "acme_Corp1"
    assert validate_tenant_id("_acme") == "acme"


def test_layout_is_a_subset_of_the_oracle(oracle):
    """Every field we define exists in the oracle's modelInsights, with the same JSON type."""
    defs = oracle.schema["$defs"]

    def resolve(node):
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        return node

    def compare(ours, theirs, path):
        theirs = resolve(theirs)
        assert ours["type"] == theirs["type"], path
        if ours["type"] == "object" and "properties" in ours:
            for k, child in ours["properties"].items():
                assert k in theirs.get("properties", {}), f"{path}.{k} not in the oracle"
                compare(child, theirs["properties"][k], f"{path}.{k}")
        if ours["type"] == "array":
            compare(ours["items"], theirs["items"], f"{path}[]")

    compare(model_insights_schema(strict=True), defs["modelInsights"], "modelInsights")


# ---------------------------------------------------------------------------------- records
def test_real_records_pass_the_oracle(records, oracle):
    problems = []
    for i, rec in enumerate(records):
        for err in oracle.iter_errors(rec):
            problems.append(f"record {i}: {err.json_path}: {err.message}")
    assert not problems, problems[:10]


def test_real_records_invariants(records):
    ids = set()
    for rec in records:
        assert _primaries(rec) == 1
        assert ":" not in rec["_id"] and len(rec["_id"]) == 64
        ids.add(rec["_id"])
        for path, node in _walk(rec):
            assert node is not None, path
            assert node not in ("", [], {}), path
        primary_ns = next(
            ns for ns, items in rec["identityMap"].items() for i in items if i["primary"]
        )
        if "CRMID" in rec["identityMap"]:
            assert primary_ns == "CRMID"
            assert rec["identityMap"]["CRMID"][0]["authenticatedState"] == "authenticated"
        for ns, items in rec["identityMap"].items():
            if ns != "CRMID":
                assert items[0]["authenticatedState"] == "ambiguous"
    assert len(ids) == len(records), "_id must be unique per profile"
    # the run-time validator agrees with the oracle
    _valid, rejects = validate_records(records, TENANT)
    assert not rejects, [r.reasons for r in rejects[:3]]


def test_records_are_deterministic_and_sorted(rows, records):
    again = list(build_records(rows, TENANT, AS_OF))
    assert again == records
    ids = [r["customer_id"] for r in rows]
    assert ids == sorted(ids)
    other_day = build_record(rows[0], TENANT, "2026-01-01")
    assert other_day["_id"] != records[0]["_id"]


def test_primary_fallback_and_omitted_values():
    rec = build_record(_row(crm_id=None), TENANT, AS_OF)
    assert rec["identityMap"]["Email_LC_SHA256"][0]["primary"] is True
    assert rec["identityMap"]["ECID"][0]["primary"] is False
    rec = build_record(_row(crm_id="", email_sha256=None), TENANT, AS_OF)
    assert list(rec["identityMap"]) == ["ECID"]
    assert rec["identityMap"]["ECID"][0] == {
        "id": "123",
        "authenticatedState": "ambiguous",
        "primary": True,
    }
    rec = build_record(_row(churn_score=None, churn_probability=float("nan")), TENANT, AS_OF)
    insights = rec["_acme"]["modelInsights"]
    assert "churn" not in insights and "conversion" not in insights
    assert insights["segment"] == {"segmentID": "3", "segmentName": "Loyal", "modelName": "segment"}
    rec = build_record(_row(), TENANT, AS_OF)
    factor = rec["_acme"]["modelInsights"]["churn"]["influentialFactors"][0]
    assert factor == {
        "code": "recency_days",
        "value": "3",
        "importance": "high",
        "direction": "increases",
    }


LEAF_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "  ", "2025-12-31", "2025-12-31T10:00:00Z", "high", "3.0", "null"]),
    st.dates(),
    st.datetimes(),
    st.decimals(allow_nan=False, places=3, max_value=10**6, min_value=-(10**6)),
)
LEAVES = [
    Field("x", xdm_type, "X", "x", source="x", to_string=to_string)
    for xdm_type, to_string in (
        ("string", False),
        ("string", True),
        ("number", False),
        ("integer", False),
        ("date", False),
    )
]


def _outcome(fn, *args):
    try:
        return ("value", fn(*args))
    except Exception as err:  # both sides must fail the same way on a value they refuse
        return ("error", type(err))


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda f: f"{f.xdm_type}{'-str' * f.to_string}")
@settings(max_examples=150, deadline=None)
@given(value=LEAF_VALUES)
@example(value=float("nan"))
@example(value=float("-inf"))
@example(value=3.0)
@example(value=2.5)
@example(value=2**60 + 1)
@example(value=True)
@example(value=" ")
def test_compiled_leaves_agree_with_leaf(value, leaf):
    """The builder inlines fast paths for str/float/int/date; every value, of any type,
    converts exactly as the one definition (_leaf) converts it."""
    compiled = _compile(leaf)
    expected = _outcome(lambda: None if value is None else _leaf(leaf, value))
    got = _outcome(compiled, {"x": value}, {})
    if expected[0] == "value" and isinstance(expected[1], float) and math.isnan(expected[1]):
        raise AssertionError("a leaf never yields NaN")
    assert got == expected, (leaf.xdm_type, leaf.to_string, value)
    assert type(got[1]) is type(expected[1])  # 1 and 1.0 are equal, but not the same JSON


def test_compiled_builder_walks_the_layout_once():
    """The modelInsights builder is Python source generated from the layout: one function,
    no per-field calls on the fast path."""
    source = _model_insights().__source__
    assert source.startswith("def build(row, ctx):")
    for column in ("churn_score", "clv_expected_value", "segment_name", "top_categories_json"):
        assert f"row.get({column!r})" in source


def test_serialize_refuses_non_finite_numbers():
    assert serialize({"b": "null", "a": [1.5, None]}) == b'{"a":[1.5,null],"b":"null"}'
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="JSON compliant"):
            serialize({"a": {"b": [1, bad]}})
    record = build_record(_row(), TENANT, AS_OF)
    record["_acme"]["modelInsights"]["churn"]["probability"] = float("nan")
    reasons, data = RecordValidator(TENANT).check(record)
    assert data is None and any(r.startswith("serialize:") for r in reasons), reasons


def test_schema_reasons_name_the_field():
    record = build_record(_row(churn_score=101, churn_bucket="extreme"), TENANT, AS_OF)
    reasons, _ = RecordValidator(TENANT).check(record)
    assert "schema: _acme/modelInsights/churn/score: 101 is greater than the maximum of 100" in (
        reasons
    )
    assert any(r.startswith("schema: _acme/modelInsights/churn/bucket: ") for r in reasons)


def test_record_schema_compiles_as_2020_12():
    Draft202012Validator.check_schema(record_json_schema(TENANT))


# ---------------------------------------------------------------------------------- batches
def _sorted_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [key for key, _ in pairs]
    assert keys == sorted(keys), keys
    return dict(pairs)


def test_manifest_is_correct(records, tmp_path):
    (batch,) = _write(records, tmp_path)
    manifest = json.loads((batch.path / "manifest.json").read_text())
    assert batch.path.name == f"batch-{manifest['batchId']}"
    assert manifest["recordCount"] == len(records) == batch.record_count
    assert manifest["rejectCount"] == 0 and not (batch.path / "rejects.jsonl").exists()
    assert manifest["tenantId"] == TENANT and manifest["asOfDate"] == AS_OF
    assert manifest["modelVersions"] == VERSIONS and manifest["schemaId"] == "{{SCHEMA_ID}}"
    assert manifest["datasetId"] and manifest["inputFormat"] == {"format": "json"}
    total = 0
    for f in manifest["files"]:
        data = (batch.path / f["name"]).read_bytes()
        assert len(data) == f["bytes"]
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        lines = data.splitlines()
        assert len(lines) == f["records"]
        for line in lines[:50]:
            # canonical: keys sorted at every level, compact, and what a re-serialization of
            # the parsed record gives (so a re-export writes the same bytes)
            obj = json.loads(line, object_pairs_hook=_sorted_object)
            assert line == orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
            assert b'": ' not in line and b'", "' not in line
        total += f["records"]
    assert total == len(records)
    assert manifest["totalBytes"] == sum(f["bytes"] for f in manifest["files"])
    assert validate_batch(batch.path) == []
    assert manifest["format"] == "json"  # what the uploader passes to POST /batches
    (batch.path / "upload_state.json").write_text("{}")  # the uploader's state is tolerated
    assert validate_batch(batch.path) == []
    (again,) = _write(records, tmp_path)
    assert again.reused and (again.path / "upload_state.json").is_file()
    (batch.path / "part-99999.jsonl").write_text("{}\n")
    assert any("not listed" in p for p in validate_batch(batch.path))


@pytest.fixture(scope="module")
def warehouse_with_reject(built_warehouse: Path, tmp_path_factory) -> Path:
    """The demo warehouse plus one profile without any identity: a reject to carry."""
    path = tmp_path_factory.mktemp("reject") / "warehouse.duckdb"
    shutil.copy(built_warehouse, path)
    con = duckdb.connect(str(path))
    try:
        con.execute(
            "insert into profile_insights select * replace ('zz-no-identity' as customer_id, "
            "null as crm_id, null as email_sha256, null as ecid) from profile_insights limit 1"
        )
    finally:
        con.close()
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_workers_write_the_same_bytes(warehouse_with_reject, tmp_path, fmt):
    """Records built and validated in worker processes come back in order: two workers
    write byte for byte what one process writes, rejects included."""
    serial = export_profiles(
        warehouse_with_reject, tmp_path / "one", tenant=TENANT, fmt=fmt, workers=1
    )
    parallel = export_profiles(
        warehouse_with_reject, tmp_path / "two", tenant=TENANT, fmt=fmt, workers=2
    )
    assert serial.rejects == parallel.rejects == 1
    assert serial.records == parallel.records > 500
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")


def test_workers_keep_the_order_of_many_batches(warehouse_with_reject):
    """Small Arrow batches, more than the pool keeps in flight: every checked record comes
    back in the order it was read, the same as checking them in this process."""
    validator = RecordValidator(TENANT)
    expected = [
        (record if reasons else None, reasons, data)
        for record in build_records(read_profile_insights(warehouse_with_reject), TENANT, AS_OF)
        for reasons, data in [validator.check(record)]
    ]
    batches = list(read_profile_batches(warehouse_with_reject, batch_size=50))
    assert len(batches) > 8  # more than 2 * workers in flight
    got = list(
        checked_in_workers(
            batches,
            tenant=TENANT,
            as_of=AS_OF,
            max_record_bytes=MAX_RECORD_BYTES,
            keep_records=False,
            workers=2,
        )
    )
    assert got == expected
    assert sum(1 for _, reasons, _ in got if reasons) == 1


def test_validate_batch_detects_tampering(records, tmp_path):
    (batch,) = _write(records[:200], tmp_path)
    part = batch.path / "part-00000.jsonl"
    data = part.read_bytes()
    part.write_bytes(data.replace(b'"authenticated"', b'"Authenticated"', 1))  # same size
    assert any("sha256" in p for p in validate_batch(batch.path))
    part.write_bytes(data + b"{}\n")
    assert any("bytes" in p for p in validate_batch(batch.path))
    # a rerun repairs the damaged copy instead of keeping it
    (again,) = _write(records[:200], tmp_path)
    assert not again.reused and validate_batch(again.path) == []


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_idempotent_rerun(records, tmp_path, fmt):
    first = _write(records, tmp_path / "a", fmt=fmt, max_file_bytes=500_000)
    before = _digests(tmp_path / "a")
    second = _write(records, tmp_path / "a", fmt=fmt, max_file_bytes=500_000)
    assert [b.batch_id for b in first] == [b.batch_id for b in second]
    assert all(b.reused for b in second)
    assert _digests(tmp_path / "a") == before, "rerun must not create a second copy"
    elsewhere = _write(records, tmp_path / "b", fmt=fmt, max_file_bytes=500_000)
    assert _digests(tmp_path / "b") == before, "same inputs must give byte-identical files"
    assert [b.batch_id for b in elsewhere] == [b.batch_id for b in first]
    assert validate_batch(first[0].path) == []
    changed = _write(records, tmp_path / "c", fmt=fmt, as_of="2026-01-01")
    assert changed[0].batch_id != first[0].batch_id


def test_file_and_batch_splitting(records, tmp_path):
    limit = 20_000
    batches = _write(records, tmp_path, max_file_bytes=limit, max_files_per_batch=10)
    assert len(batches) > 1
    assert sum(b.record_count for b in batches) == len(records)
    for b in batches:
        assert len(b.files) <= 10
        for f in b.files:
            assert f["bytes"] <= limit or f["records"] == 1
        assert validate_batch(b.path, check_records=False) == []
    lines = [
        json.loads(line)["_id"]
        for b in batches
        for f in b.files
        for line in (b.path / f["name"]).read_bytes().splitlines()
    ]
    assert lines == [r["_id"] for r in records], "order and completeness are kept across splits"
    small = _write(records, tmp_path / "bytes", max_file_bytes=limit, max_batch_bytes=3 * limit)
    assert all(b.bytes <= 3 * limit for b in small) and len(small) > 1


def test_invalid_records_go_to_rejects(records, tmp_path):
    two_primaries = copy.deepcopy(records[0])
    for items in two_primaries["identityMap"].values():
        items[0]["primary"] = True
    oversize = copy.deepcopy(records[1])
    cats = [{"id": f"cat-{i}", "name": "x" * 50, "score": 0.1, "rank": 1} for i in range(2000)]
    oversize["_acme"]["modelInsights"]["affinity"]["topCategories"] = cats
    no_identity = build_record(_row(crm_id=None, email_sha256=None, ecid=None), TENANT, AS_OF)
    bad = [two_primaries, oversize, no_identity]
    batches = _write([*records[2:50], *bad], tmp_path)
    assert sum(b.reject_count for b in batches) == 3
    assert sum(b.record_count for b in batches) == 48
    (batch,) = batches
    rejects = [json.loads(x) for x in (batch.path / "rejects.jsonl").read_text().splitlines()]
    reasons = [" ".join(r["reasons"]) for r in rejects]
    assert "exactly one primary" in reasons[0] and "found 3" in reasons[0]
    assert "size:" in reasons[1]
    assert "identityMap" in reasons[2]
    written = {
        json.loads(line)["_id"]
        for f in batch.files
        for line in (batch.path / f["name"]).read_bytes().splitlines()
    }
    assert two_primaries["_id"] not in written and oversize["_id"] not in written
    assert validate_batch(batch.path) == []


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from profile_enrichment.export import write_batches

    src, out = sys.argv[1], sys.argv[2]
    records = [json.loads(x) for x in open(src, encoding="utf-8")]

    def slow():
        for i, rec in enumerate(records * 4):
            if i == len(records) * 3:
                print("stalling", flush=True)
                time.sleep(120)  # the parent kills us here, mid-batch
            yield rec

    write_batches(slow(), out, tenant="acme", as_of="2025-12-31", model_versions={"m": "1"},
                  schema_id="S", max_file_bytes=50_000, max_files_per_batch=10)
    """
)


def test_sigkill_mid_write_leaves_no_partial_batch(records, tmp_path):
    src = tmp_path / "records.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(src), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "stalling", proc.stderr.read()
        assert list(out.glob(".tmp-*")), "the child should be mid-write"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    complete = sorted(out.glob("batch-*"))
    assert complete, "batches finished before the kill should be there"
    for b in complete:
        assert validate_batch(b) == [], b
    leftovers = list(out.glob(".tmp-*"))
    assert leftovers and any(p.glob("part-*") for p in leftovers)

    rerun = _write(
        records * 4,
        out,
        model_versions={"m": "1"},
        schema_id="S",
        max_file_bytes=50_000,
        max_files_per_batch=10,
    )
    assert not list(out.glob(".tmp-*")), "leftovers must be cleaned by the next run"
    assert sum(b.record_count for b in rerun) == len(records) * 4
    assert {b.path for b in rerun} == set(out.glob("batch-*"))
    assert {b.path for b in rerun if b.reused} == set(complete)
    for b in rerun:
        assert validate_batch(b.path, check_records=False) == []
