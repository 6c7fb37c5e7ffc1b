"""Fingerprints of everything a run leaves behind, for the reliability tests.

- ``table_hashes``: every table and view of the warehouse as (row count, order-independent sum
  of DuckDB's row hashes). Two tables with the same fingerprint hold the same multiset of
  rows, bit for bit (doubles included).
- ``tree_digest``: every file under a folder as relative path -> sha256 of its bytes.
- ``assert_batches_complete``: what a reader of an export folder may see.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb

from profile_enrichment.export.batches import validate_batch


def table_hashes(warehouse: Path) -> dict[str, tuple[int, int]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        names = [
            row[0]
            for row in con.sql(
                "select table_name from information_schema.tables "
                "where table_schema = 'main' order by table_name"
            ).fetchall()
        ]
        fingerprints = {}
        for name in names:
            (count, total) = con.sql(
                f'select count(*), coalesce(sum(hash(t)::hugeint), 0) from "{name}" as t'
            ).fetchall()[0]
            fingerprints[name] = (int(count), int(total))
        return fingerprints
    finally:
        con.close()


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_batches_complete(out_dir: Path) -> list[str]:
    """Every visible ``batch-*`` folder is whole (manifest, files and checksums agree) and every
    payload parses. Leftovers of a killed writer may only be hidden ``.tmp-*`` entries, which
    the next export removes. Returns the names of the complete batches."""
    if not out_dir.exists():
        return []
    complete = []
    for entry in sorted(out_dir.iterdir()):
        if entry.name.startswith("."):
            assert entry.name.startswith(".tmp-") or entry.name.endswith(".tmp"), entry
            continue
        if entry.name == "payloads":
            for payload in entry.iterdir():
                if payload.name.startswith("."):
                    continue  # an unfinished atomic write: never read by anyone
                json.loads(payload.read_text())
            continue
        assert entry.name.startswith("batch-"), f"unexpected entry in the export folder: {entry}"
        problems = validate_batch(entry)
        assert problems == [], f"{entry.name} is visible but broken: {problems[:5]}"
        complete.append(entry.name)
    return complete
