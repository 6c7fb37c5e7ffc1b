"""Documentation stays complete: every model and column is described, every feature is in the README."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from conftest import PROJECT_DIR, query

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
