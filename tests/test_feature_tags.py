"""Feature tags in YAML drive the models: one SQL edit plus one tagged column, no Python change.

A copy of the dbt project gets a new column in the per_customer CTE of
macros/features/customer_features_as_of.sql (checkouts_total) and its YAML entry, tagged
`feature: true`, under the shared &feature_columns list. `dbt build` in the copy must then
carry it into feature_catalog, into the features the churn and conversion models train on
(model_registry.features_json and the pickled model itself), and into the factors the churn
model names. Every other feature but two is untagged in the copy, so the models must follow
the tags both ways, and the new column has room to be a top factor (it is, for many customers).
In the same copy, an identifier, a date and a boolean are tagged as features: feature_catalog
must refuse them and no model may use them.

Also: `dbt build --empty` on the real project (target ci) either passes or fails only with
our own one-line errors (UserError / ModelFitError), never with any other exception.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import copy_project, query, run_cli, run_dbt

NEW_FEATURE = "checkouts_total"
# Tagged as features in the copy; feature_catalog must refuse them (an identifier, a date, a
# boolean), saying why.
REFUSED = ["customer_id", "first_purchase_date", "has_purchased"]
MACRO = Path("macros/features/customer_features_as_of.sql")
MODELS_YML = Path("models/marts/features/_features__models.yml")
ANCHOR_AFTER = "bounced_sessions_total"  # the new column goes right after this one
# The only other features left tagged, so that the new one has room among the three factors.
KEPT = ["recency_days", "days_since_last_visit"]


def add_feature_in_sql(project: Path) -> None:
    path = project / MACRO
    text = path.read_text()
    anchor = f"as {ANCHOR_AFTER},\n"
    assert text.count(anchor) == 1, f"{MACRO} changed shape: cannot find '{anchor.strip()}'"
    indent = re.search(rf"\n(\s*)[^\n]*{re.escape(anchor)}", text).group(1)
    path.write_text(
        text.replace(anchor, f"{anchor}{indent}cast(sum(checkouts) as bigint) as {NEW_FEATURE},\n")
    )


def tag_features_in_yaml(project: Path) -> None:
    """Add the new column after ANCHOR_AFTER in the &feature_columns list, and tag the columns
    in REFUSED as features. Text edits, so the YAML anchor and everything else stay as they are."""
    path = project / MODELS_YML
    text = path.read_text()
    anchor_at = text.index("columns: &feature_columns")
    head, columns = text[:anchor_at], text[anchor_at:]
    column = re.search(r"\n(\s*)- name: ", columns)
    indent = column.group(1)
    inner = indent + "  "

    def block_end(name: str) -> int:
        start = columns.index(f"\n{indent}- name: {name}\n")
        following = columns.find(f"\n{indent}- name: ", start + 1)
        assert following > 0, f"{name} is the last column"
        return following

    at = block_end(ANCHOR_AFTER)
    columns = (
        columns[:at]
        + f"\n{indent}- name: {NEW_FEATURE}"
        + f"\n{inner}data_type: bigint"
        + f"\n{inner}description: Checkouts started before as_of_date (added by a test)."
        + f"\n{inner}config:"
        + f"\n{inner}  meta:"
        + f"\n{inner}    feature: true"
        + f"\n{inner}    feature_group: engagement"
        + columns[at:]
    )
    # Untag every other feature but KEPT: the models must follow the tags both ways.
    blocks = re.split(rf"(?=\n{re.escape(indent)}- name: )", columns)
    for i, block in enumerate(blocks):
        name = re.match(rf"\n{re.escape(indent)}- name: (\w+)", block)
        if name and name.group(1) not in {NEW_FEATURE, *KEPT}:
            blocks[i] = block.replace("feature: true", "feature: false")
    columns = "".join(blocks)
    for name in REFUSED:
        start = columns.index(f"\n{indent}- name: {name}\n")
        end = block_end(name)
        assert "config:" not in columns[start:end], f"{name} already has a config block"
        columns = (
            columns[:end]
            + f"\n{inner}config:\n{inner}  meta:\n{inner}    feature: true"
            + f"\n{inner}    feature_group: engagement"
            + columns[end:]
        )
    path.write_text(head + columns)


@dataclass(frozen=True)
class Build:
    warehouse: Path
    artifacts: Path


@pytest.fixture(scope="module")
def tagged_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    work = tmp_path_factory.mktemp("feature_tags")
    raw = work / "raw"
    result = run_cli(
        "generate", "--customers", "300", "--days", "240", "--seed", "5", "--out", str(raw)
    )
    assert result.returncode == 0, result.stderr
    project = copy_project(work / "project")
    add_feature_in_sql(project)
    tag_features_in_yaml(project)
    warehouse = work / "warehouse.duckdb"
    artifacts = work / "artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PE_")}
    env.update(
        DBT_PROFILES_DIR=str(project),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        DO_NOT_TRACK="1",
        PE_TARGET="dev",
        PE_WAREHOUSE=str(warehouse),
    )
    dbt_vars = {
        "raw_dir": str(raw),
        "artifacts_dir": str(artifacts),
        # publish the first churn model whenever it fits (the test is about features, not AUC)
        "propensity_metric_floor": 0.5,
    }
    # --threads 1: with 2 threads, two Python models importing scikit-learn at the same time
    # can fail with "cannot import name 'clone' from partially initialized module
    # 'sklearn.base'" (a race outside what this test is about; reported separately).
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            "build",
            "--threads",
            "1",
            "--vars",
            json.dumps(dbt_vars),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    return Build(warehouse, artifacts)


@pytest.mark.dbt
def test_a_tagged_column_becomes_a_feature_of_every_model(tagged_build: Build) -> None:
    catalog = {
        row[0]: row[1:]
        for row in query(
            tagged_build.warehouse,
            "select column_name, data_type, feature_group, is_feature, refusal_reason"
            " from feature_catalog",
        )
    }
    assert catalog[NEW_FEATURE] == ("bigint", "engagement", True, "")

    # The column holds what its SQL says: every checkout before the as-of date, per customer.
    totals = query(
        tagged_build.warehouse,
        f"""
        select
            (select sum({NEW_FEATURE}) from customer_features),
            (select count(*) from int_events_accepted
             where event_group = 'checkout'
                and event_date < (select as_of_date from int_run_as_of_date)),
            (select count(distinct {NEW_FEATURE}) from customer_feature_snapshots)
        """,
    )[0]
    assert totals[0] == totals[1] > 0
    assert totals[2] > 5, "the new feature should vary across customers"

    registry = {
        row[0]: (json.loads(row[1]), row[2], row[3], row[4])
        for row in query(
            tagged_build.warehouse,
            "select model_name, features_json, status, artifact_path, artifact_sha256"
            " from model_registry where model_name in ('churn', 'conversion')",
        )
    }
    assert set(registry) == {"churn", "conversion"}
    # Exactly the tagged columns, in YAML order: the new one in, the untagged ones out.
    for name, (features, *_rest) in registry.items():
        assert features == [NEW_FEATURE, *KEPT], f"{name} trained on {features}"

    # The published churn model really trained on it, and its factors name only features.
    features, status, artifact_path, artifact_sha = registry["churn"]
    assert status == "champion", f"no churn champion to score with: {registry['churn']}"
    from profile_enrichment.ml.propensity import load_result

    result = load_result(tagged_build.artifacts / artifact_path, artifact_sha)
    assert NEW_FEATURE in list(result.feature_cols)
    codes = query(
        tagged_build.warehouse,
        """
        select code, count(*) from (
            select churn_factor_1_code as code from churn_propensity_scores
            union all select churn_factor_2_code from churn_propensity_scores
            union all select churn_factor_3_code from churn_propensity_scores
        ) where code is not null group by 1 order by 2 desc
        """,
    )
    assert {code for code, _ in codes} <= set(features)
    assert NEW_FEATURE in dict(codes), f"the churn model never names {NEW_FEATURE}: {codes}"
    first = query(
        tagged_build.warehouse,
        f"select count(*) from churn_propensity_scores where churn_factor_1_code = '{NEW_FEATURE}'",
    )[0][0]
    assert first > 0, f"{NEW_FEATURE} is never the strongest churn factor"
    print(f"churn factors (code, rows): {codes}")


@pytest.mark.dbt
def test_identifiers_dates_and_booleans_are_refused_whatever_their_tags(
    tagged_build: Build,
) -> None:
    catalog = {
        row[0]: row[1:]
        for row in query(
            tagged_build.warehouse,
            "select column_name, is_tagged_feature, is_feature, refusal_reason"
            " from feature_catalog",
        )
    }
    for name in REFUSED:
        tagged, is_feature, reason = catalog[name]
        assert tagged and not is_feature, f"{name}: tagged {tagged}, feature {is_feature}"
        assert reason.strip(), f"{name} is refused without a reason"
    used = query(tagged_build.warehouse, "select model_name, features_json from model_registry")
    assert used
    for model_name, features_json in used:
        leaked = set(REFUSED) & set(json.loads(features_json))
        assert not leaked, f"{model_name} uses refused columns {leaked}"


OUR_ERRORS = ("UserError", "ModelFitError")
# "SomethingError: message" / "SomethingException: message" lines: Python exceptions.
EXCEPTION_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", re.M)


@pytest.mark.dbt
@pytest.mark.parametrize("as_of_date", [None, "2024-06-01"], ids=["as-of-from-data", "as-of-given"])
def test_dbt_build_empty_passes_or_fails_with_our_message(
    tmp_path: Path, as_of_date: str | None
) -> None:
    raw = tmp_path / "raw"
    result = run_cli(
        "generate", "--customers", "50", "--days", "60", "--seed", "1", "--out", str(raw)
    )
    assert result.returncode == 0, result.stderr
    dbt_vars = {"raw_dir": str(raw), "artifacts_dir": str(tmp_path / "artifacts")}
    if as_of_date:
        dbt_vars["as_of_date"] = as_of_date
    result = run_dbt(
        "build",
        "--empty",
        "--target",
        "ci",
        "--target-path",
        str(tmp_path / "target"),
        "--log-path",
        str(tmp_path / "logs"),
        dbt_vars=dbt_vars,
    )
    output = result.stdout + result.stderr
    exceptions = EXCEPTION_LINE.findall(output)
    foreign = [f"{kind}: {message}" for kind, message in exceptions if kind not in OUR_ERRORS]
    assert not foreign, "dbt build --empty crashed:\n" + "\n".join(foreign) + output[-4000:]
    if result.returncode != 0:
        # Every failing node failed with one of our errors (dbt prints a block per failure).
        failures = re.split(
            r"^.*Failure in (?:model|test|seed|unit_test|snapshot) ", output, flags=re.M
        )
        assert len(failures) > 1, "dbt build --empty failed outside any node:\n" + output[-6000:]
        for block in failures[1:]:
            block = block.split("Done. PASS=")[0]
            assert any(f"{kind}: " in block for kind in OUR_ERRORS), (
                "a node failed without a message of ours:\n" + block[:4000]
            )
    else:
        assert "ERROR=0" in output
