"""Documentation stays complete: every model and column is described, every feature is in the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT_DIR, query, run_dbt

MODEL_DIRS = [PROJECT_DIR / "models", PROJECT_DIR / "python_models"]


def _yaml_models() -> dict[str, dict]:
    models: dict[str, dict] = {}
    for folder in MODEL_DIRS:
        for path in folder.rglob("*.yml"):
            doc = yaml.safe_load(path.read_text()) or {}
            for model in doc.get("models", []) or []:
                models[model["name"]] = model
    return models


def _model_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for folder in MODEL_DIRS:
        for path in [*folder.rglob("*.sql"), *folder.rglob("*.py")]:
            files[path.stem] = path
    return files


def test_every_model_and_column_has_a_description() -> None:
    models = _yaml_models()
    missing_models = sorted(set(_model_files()) - set(models))
    assert not missing_models, f"models without YAML: {missing_models}"
    undescribed = [name for name, model in models.items() if not model.get("description")]
    assert not undescribed, f"models without a description: {undescribed}"
    bad_columns = [
        f"{name}.{column['name']}"
        for name, model in models.items()
        for column in model.get("columns", []) or []
        if not column.get("description")
    ]
    assert not bad_columns, f"columns without a description: {bad_columns}"


def test_every_built_column_is_documented(built_warehouse: Path) -> None:
    """Columns the warehouse really has (not just what YAML claims) are all described."""
    models = _yaml_models()
    undocumented = []
    for name, model in sorted(models.items()):
        rows = query(
            built_warehouse,
            "select column_name from information_schema.columns "
            f"where table_schema = 'main' and table_name = '{name}'",
        )
        documented = {c["name"] for c in model.get("columns", []) or []}
        parent = ((model.get("config") or {}).get("meta") or {}).get("inherits_columns_from")
        if parent:  # a pass-through model: its parent's YAML documents those columns
            documented |= {c["name"] for c in models[parent].get("columns", []) or []}
        undocumented += [f"{name}.{r[0]}" for r in rows if r[0] not in documented]
    assert not undocumented, f"built columns missing from YAML: {undocumented}"


def test_readme_lists_every_feature_and_starts_with_the_two_commands() -> None:
    readme = (PROJECT_DIR / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make run" in first_block and "make test" in first_block
    features = _yaml_models()["customer_features"]["columns"]
    section = readme.split("## Features", 1)[1].split("\n## ", 1)[0]
    missing = [c["name"] for c in features if f"`{c['name']}`" not in section]
    assert not missing, f"README Features section misses: {missing}"


def test_every_var_in_dbt_project_is_in_the_readme() -> None:
    project = yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())
    readme = (PROJECT_DIR / "README.md").read_text()
    missing = [
        name
        for name in project["vars"]
        if name not in readme
        and not any(re.escape(prefix) in readme for prefix in (name.rsplit("_", 1)[0] + "_*",))
    ]
    assert not missing, f"vars not documented in the README: {missing}"


# --------------------------------------------------------------------------------------------
# the parsed manifest: what `dbt docs generate` shows
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> dict:
    target = tmp_path_factory.mktemp("docs_target")
    result = run_dbt(
        "parse",
        "--target",
        "ci",
        dbt_vars={"raw_profiles": False},
        env={"DBT_TARGET_PATH": str(target)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((target / "manifest.json").read_text())


def test_every_model_column_source_seed_and_macro_is_described(manifest: dict) -> None:
    missing = []
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] not in ("model", "seed", "snapshot"):
            continue
        if not (node.get("description") or "").strip():
            missing.append(uid)
        missing += [
            f"{uid}.{name}"
            for name, column in node["columns"].items()
            if not (column.get("description") or "").strip()
        ]
    for uid, source in manifest["sources"].items():
        if not (source.get("description") or "").strip():
            missing.append(uid)
        missing += [
            f"{uid}.{name}"
            for name, column in source["columns"].items()
            if not (column.get("description") or "").strip()
        ]
    ours = [m for m in manifest["macros"].values() if m["package_name"] == "profile_enrichment"]
    assert len(ours) > 40, "our macros were not found in the manifest"
    missing += [m["unique_id"] for m in ours if not (m.get("description") or "").strip()]
    assert not missing, f"undescribed in dbt docs: {missing}"


def test_shared_doc_blocks_describe_the_common_columns(manifest: dict) -> None:
    """customer_id and as_of_date read the same in every customer-grain model: one doc block
    each. (model_registry's as_of_date is the training run's date, a different thing.)"""
    blocks = {d["name"]: d["block_contents"].strip() for d in manifest["docs"].values()}
    for column in ("customer_id", "as_of_date"):
        assert column in blocks, f"no shared doc block for {column}"
        users = [
            n["unique_id"]
            for n in manifest["nodes"].values()
            if n["resource_type"] == "model"
            and column in n["columns"]
            and "customer_id" in n["columns"]
        ]
        assert len(users) > 5
        differing = [
            u
            for u in users
            if manifest["nodes"][u]["columns"][column]["description"].strip() != blocks[column]
        ]
        assert not differing, f"{column} described differently (not via doc()): {differing}"


def test_groups_and_access(manifest: dict) -> None:
    models = [n for n in manifest["nodes"].values() if n["resource_type"] == "model"]
    assert all(n.get("group") for n in models), [n["name"] for n in models if not n.get("group")]
    for node in models:
        in_insights = node["original_file_path"].startswith("models/marts/insights/")
        if in_insights:
            assert node["access"] == "public", node["unique_id"]
            assert node["config"]["contract"]["enforced"], f"{node['unique_id']} not contracted"
        else:
            assert node["access"] in ("protected", "private"), node["unique_id"]
    assert any(n["access"] == "private" for n in models)


def test_exposures_cover_the_export_and_the_report(manifest: dict) -> None:
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    assert {"aep_profile_export", "model_report"} <= set(exposures)
    for exposure in exposures.values():
        assert exposure["description"].strip() and exposure["owner"]["email"]
    report_parents = {n.split(".")[-1] for n in exposures["model_report"]["depends_on"]["nodes"]}
    # Every table the report's SQL reads is declared as a parent of the exposure.
    source = (PROJECT_DIR / "src/profile_enrichment/report/queries.py").read_text()
    read = set(re.findall(r"\b(?:from|join)\s+([a-z_]+)\b", source)) & {
        n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"
    }
    assert read, "found no table in the report's queries"
    assert read <= report_parents, f"report reads undeclared models: {read - report_parents}"
