"""`profile-enrichment export` and `validate` as a user runs them, on a real built warehouse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import run_cli


def _export(warehouse: Path, out: Path, *extra: str):
    return run_cli("export", "--warehouse", str(warehouse), "--out", str(out), *extra)


def test_export_writes_payloads_and_a_valid_batch(built_warehouse: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    result = _export(built_warehouse, out, "--tenant", "acme")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {p.name for p in (out / "payloads").iterdir()} == {
        "fieldgroup.json",
        "schema.json",
        "dataset.json",
    }
    field_group = json.loads((out / "payloads" / "fieldgroup.json").read_text())
    assert field_group["meta:intendedToExtend"] == ["https://ns.adobe.com/xdm/context/profile"]
    (batch,) = sorted(out.glob("batch-*"))
    manifest = json.loads((batch / "manifest.json").read_text())
    assert manifest["tenantId"] == "acme" and manifest["recordCount"] > 0
    checked = run_cli("validate", str(batch))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rerun_is_idempotent_and_tampering_is_detected(
    built_warehouse: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exports"
    assert _export(built_warehouse, out).returncode == 0
    (batch,) = sorted(out.glob("batch-*"))
    before = {p.name: p.read_bytes() for p in batch.iterdir() if p.is_file()}
    again = _export(built_warehouse, out)
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert sorted(out.glob("batch-*")) == [batch]
    assert {p.name: p.read_bytes() for p in batch.iterdir() if p.is_file()} == before

    tampered = tmp_path / "tampered"
    shutil.copytree(batch, tampered)
    data_file = next(p for p in tampered.iterdir() if p.suffix in (".json", ".jsonl"))
    data_file.write_bytes(data_file.read_bytes()[:-50])
    checked = run_cli("validate", str(tampered))
    assert checked.returncode == 1
    assert "Traceback" not in checked.stderr


def test_export_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    missing = _export(tmp_path / "nope.duckdb", tmp_path / "out")
    assert missing.returncode == 2 and "warehouse not found" in missing.stderr
    # a bad --tenant: tests/fixtures/bad_input/cases.yml (unknown_tenant)
    not_a_batch = run_cli("validate", str(tmp_path))
    assert not_a_batch.returncode == 2 and "manifest.json" in not_a_batch.stderr


def test_upload_cli_sends_an_exported_batch_to_a_local_aep(
    built_warehouse: Path, tmp_path: Path
) -> None:
    """export -> upload end to end, through the CLI, against the local Batch Ingestion server."""
    from test_upload import CLIENT_SECRET, env_for, start_fake_aep

    out = tmp_path / "exports"
    assert _export(built_warehouse, out).returncode == 0
    (batch,) = sorted(out.glob("batch-*"))
    server = start_fake_aep()
    try:
        result = run_cli("upload", str(batch), "--poll-interval", "0.05", env=env_for(server))
        assert result.returncode == 0, result.stdout + result.stderr
        (aep_batch,) = server.batches.values()
        sent = dict(aep_batch.files)
    finally:
        server.stop()
    for entry in json.loads((batch / "manifest.json").read_text())["files"]:
        assert sent[entry["name"]] == (batch / entry["name"]).read_bytes()
    assert CLIENT_SECRET not in result.stdout + result.stderr
    state = (batch / "upload_state.json").read_text()
    assert CLIENT_SECRET not in state and "completed" in state
