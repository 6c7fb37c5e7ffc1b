"""Tests for profile_enrichment.ml.registry: versions, champion lifecycle, artifact integrity,
atomic writes."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from profile_enrichment import fsutil
from profile_enrichment.ml.registry import (
    ArtifactIntegrityError,
    ModelRegistry,
    RegistryEntry,
    RegistryError,
    fingerprint_frame,
    model_version,
)


def entry(version: str, status: str = "champion", **overrides) -> RegistryEntry:
    fields = {
        "model_name": "propensity",
        "model_version": version,
        "as_of_date": "2024-06-30",
        "training_window_start": "2023-07-01",
        "training_window_end": "2024-06-30",
        "n_train": 800,
        "n_valid": 200,
        "params": {"C": 1.0},
        "metrics": {"auc": 0.81},
        "features": ["recency_days", "revenue_90d"],
        "status": status,
        "reason": "beats champion" if status == "champion" else "worse than champion",
    }
    fields.update(overrides)
    return RegistryEntry(**fields)


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "artifacts")


# -- versions and fingerprints -----------------------------------------------------------------


def test_model_version_is_a_deterministic_content_hash():
    v = model_version("abc", {"C": 1.0, "penalty": "l2"}, "0.1.0")
    assert len(v) == 16 and int(v, 16) >= 0
    assert v == model_version("abc", {"penalty": "l2", "C": 1.0}, "0.1.0")  # key order
    assert v == model_version("abc", {"C": np.float64(1.0), "penalty": "l2"}, "0.1.0")
    assert v != model_version("abd", {"C": 1.0, "penalty": "l2"}, "0.1.0")
    assert v != model_version("abc", {"C": 2.0, "penalty": "l2"}, "0.1.0")
    assert v != model_version("abc", {"C": 1.0, "penalty": "l2"}, "0.1.1")


def test_fingerprint_ignores_row_and_column_order_but_not_content():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(500)],
            "revenue": rng.gamma(2.0, 10.0, 500),
            "orders": rng.integers(0, 9, 500),
            "is_member": rng.random(500) < 0.5,
        }
    )
    fp = fingerprint_frame(df)
    assert len(fp) == 64
    shuffled = df.sample(frac=1.0, random_state=1)[
        ["orders", "is_member", "revenue", "customer_id"]
    ]
    assert fingerprint_frame(shuffled) == fp
    changed = df.copy()
    changed.loc[3, "revenue"] += 0.01
    assert fingerprint_frame(changed) != fp
    assert fingerprint_frame(pd.concat([df, df.head(1)])) != fp  # duplicates count
    assert fingerprint_frame(df.astype({"orders": "float64"})) != fp  # schema counts
    assert fingerprint_frame(df.head(0)) == fingerprint_frame(df.head(0))
    lists = pd.DataFrame({"k": [1, 2], "tags": [["a"], {"b": 1}]})
    assert fingerprint_frame(lists) == fingerprint_frame(lists.iloc[::-1])


def test_fingerprint_rows_that_tie_on_the_row_mix_are_ordered_by_content(monkeypatch):
    """Rows are sorted by one 64-bit mix of their cell hashes; rows with the same mix (equal
    rows, or a collision) fall back to a lexicographic sort. A zero multiplier makes every row
    collide, so the fallback alone must still make the fingerprint order-independent."""
    import profile_enrichment.ml.registry as registry

    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {"k": rng.integers(0, 4, 300), "x": rng.integers(0, 3, 300), "y": rng.random(300) < 0.5}
    )  # many duplicated rows
    shuffled = df.sample(frac=1.0, random_state=5)
    assert fingerprint_frame(shuffled) == fingerprint_frame(df)
    monkeypatch.setattr(registry, "_MIX", np.uint64(0))
    everything_ties = fingerprint_frame(df)
    assert fingerprint_frame(shuffled) == everything_ties
    assert fingerprint_frame(df.head(299)) != everything_ties


# -- register, champion lifecycle ----------------------------------------------------------------


def test_register_is_idempotent(reg):
    first = reg.register(entry("v1"))
    content = reg.path.read_bytes()
    again = reg.register(entry("v1"))
    assert again == first
    assert reg.path.read_bytes() == content
    assert len(reg.entries()) == 1
    assert "registered_at" in json.loads(content.decode().splitlines()[0])
    assert first.registered_at is None  # no wall clock unless the caller passes one


def test_champion_is_retired_by_a_new_champion_and_rollback_works(reg):
    reg.register(entry("v1", as_of_date="2024-05-31"))
    reg.register(entry("v2", as_of_date="2024-06-30"))
    assert reg.champion("propensity").model_version == "v2"
    old = reg.get("propensity", "v1")
    assert (old.status, old.superseded_by) == ("retired", "v2")
    assert old.reason == "beats champion"  # the row is kept as it was
    # Rollback: re-registering v1 as champion retires v2.
    reg.register(entry("v1", as_of_date="2024-05-31"))
    assert reg.champion("propensity").model_version == "v1"
    assert reg.get("propensity", "v2").status == "retired"
    assert [e.status for e in reg.entries()].count("champion") == 1


def test_rejected_entries_do_not_replace_the_champion(reg):
    reg.register(entry("v1"))
    reg.register(entry("v2", status="rejected", as_of_date="2024-07-31"))
    assert reg.champion("propensity").model_version == "v1"
    assert reg.get("propensity", "v1").status == "champion"
    assert reg.get("propensity", "v2").status == "rejected"
    with pytest.raises(RegistryError, match="status 'retired'"):
        reg.register(entry("v3", status="retired"))


def test_models_are_independent_and_entries_sorted(reg):
    reg.register(entry("b2", as_of_date="2024-06-30"))
    reg.register(entry("a9", model_name="ltv", as_of_date="2024-06-30"))
    reg.register(entry("a1", as_of_date="2024-06-30"))
    reg.register(entry("z0", status="rejected", as_of_date="2024-01-31"))
    keys = [(e.model_name, e.as_of_date, e.model_version) for e in reg.entries()]
    assert keys == sorted(keys)
    assert reg.champion("ltv").model_version == "a9"
    assert reg.champion("propensity").model_version == "a1"
    assert reg.champion("unknown") is None
    frame = reg.to_frame()
    assert len(frame) == 4 and json.loads(frame.loc[0, "features"]) == [
        "recency_days",
        "revenue_90d",
    ]


def test_register_normalizes_numpy_and_nan(reg):
    stored = reg.register(
        entry("v1", n_train=800, params={"k": np.int64(4)}, metrics={"auc": float("nan")})
    )
    assert stored.params == {"k": 4}
    assert stored.metrics == {"auc": None}
    assert "NaN" not in reg.path.read_text()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_name": "../evil"}, "not a safe name"),
        ({"as_of_date": "last tuesday"}, "ISO date"),
        ({"n_train": -1}, "non-negative"),
        ({"artifact_path": "x/y", "artifact_sha256": None}, "go together"),
    ],
)
def test_invalid_entries_are_refused(reg, overrides, message):
    with pytest.raises(RegistryError, match=message):
        reg.register(entry("v1", **overrides))


# -- artifacts -----------------------------------------------------------------------------------


def test_save_and_load_artifacts(reg):
    rel, sha = reg.save_artifact("segments", "v1", {"b": [1, 2], "a": 0.5})
    assert rel == "segments/v1/model.json"
    rel2, sha2 = reg.save_artifact("segments", "v1", {"a": 0.5, "b": [1, 2]})
    assert (rel2, sha2) == (rel, sha)  # canonical JSON: same object, same hash
    e = reg.register(entry("v1", model_name="segments", artifact_path=rel, artifact_sha256=sha))
    assert reg.load_artifact_json(e) == {"a": 0.5, "b": [1, 2]}
    brel, bsha = reg.save_artifact("segments", "v2", b"\x00\x01binary")
    e2 = reg.register(entry("v2", model_name="segments", artifact_path=brel, artifact_sha256=bsha))
    assert reg.load_artifact_bytes(e2) == b"\x00\x01binary"


def test_tampered_artifact_is_refused(reg):
    rel, sha = reg.save_artifact("propensity", "v1", {"coef": [1.0]})
    e = reg.register(entry("v1", artifact_path=rel, artifact_sha256=sha))
    (reg.root / rel).write_text('{"coef": [666.0]}')
    with pytest.raises(ArtifactIntegrityError, match="refusing to load a modified artifact"):
        reg.load_artifact_bytes(e)


def test_only_registered_artifacts_are_loaded(reg):
    rel, sha = reg.save_artifact("propensity", "v1", {"coef": [1.0]})
    e = reg.register(entry("v1", artifact_path=rel, artifact_sha256=sha))
    other_rel, other_sha = reg.save_artifact("propensity", "v1", b"other", filename="x.bin")
    forged = RegistryEntry(
        **{**e.to_dict(), "artifact_path": other_rel, "artifact_sha256": other_sha}
    )
    with pytest.raises(ArtifactIntegrityError, match="differ from the registry"):
        reg.load_artifact_bytes(forged)
    with pytest.raises(ArtifactIntegrityError, match="not in"):
        reg.load_artifact_bytes(entry("never-registered", artifact_path=rel, artifact_sha256=sha))
    # Registering an entry whose hash does not match the file is refused up front.
    with pytest.raises(ArtifactIntegrityError):
        reg.register(entry("v9", artifact_path=rel, artifact_sha256="0" * 64))


@pytest.mark.parametrize("bad_path", ["../outside.json", "/etc/passwd", "a/../../x", "a\\b", ""])
def test_path_traversal_is_refused(reg, bad_path):
    with pytest.raises(RegistryError):
        reg.register(entry("v1", artifact_path=bad_path, artifact_sha256="0" * 64))
    with pytest.raises(RegistryError):
        reg.save_artifact("propensity", "..", b"x")


def test_traversal_in_a_hand_edited_registry_is_refused(reg):
    reg.register(entry("v1"))
    row = json.loads(reg.path.read_text())
    row.update(artifact_path="../../outside.bin", artifact_sha256="0" * 64)
    reg.path.write_text(json.dumps(row) + "\n")
    with pytest.raises(RegistryError, match=r"registry.jsonl, line 1: .*inside the registry root"):
        reg.entries()


def test_symlink_escaping_root_is_refused(reg, tmp_path):
    rel, sha = reg.save_artifact("propensity", "v1", b"model bytes")
    e = reg.register(entry("v1", artifact_path=rel, artifact_sha256=sha))
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"model bytes")  # same content, so only the path check can catch it
    target = reg.root / rel
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(ArtifactIntegrityError, match="resolves outside"):
        reg.load_artifact_bytes(e)


# -- durability ----------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_leaves_registry_unchanged(reg, monkeypatch, failing):
    reg.register(entry("v1"))
    before = reg.path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(fsutil.os, failing, boom)
    with pytest.raises(OSError, match="simulated"):
        reg.register(entry("v2"))
    monkeypatch.undo()
    assert reg.path.read_bytes() == before
    assert reg.champion("propensity").model_version == "v1"
    leftovers = [p.name for p in reg.root.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_corrupted_line_names_file_and_line(reg):
    reg.register(entry("v1"))
    reg.register(entry("v2", status="rejected"))
    lines = reg.path.read_text().splitlines()
    lines[1] = lines[1][:40]  # a truncated line
    reg.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RegistryError) as info:
        reg.champion("propensity")
    assert str(reg.path) in str(info.value) and "line 2" in str(info.value)
    assert "invalid JSON" in str(info.value)


def test_two_champions_in_a_hand_edited_registry_are_refused(reg):
    reg.register(entry("v1"))
    reg.register(entry("v2", status="rejected"))
    reg.path.write_text(reg.path.read_text().replace('"rejected"', '"champion"'))
    with pytest.raises(RegistryError, match="second champion for propensity"):
        reg.entries()


def test_concurrent_registrations_from_threads_are_all_kept(reg):
    def work(i: int) -> None:
        reg.register(entry(f"v{i:02d}", model_name=f"m{i % 3}", status="rejected"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reg.entries()) == 12
    assert os.path.exists(reg.path)
