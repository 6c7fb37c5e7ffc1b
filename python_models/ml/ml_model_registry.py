"""The model registry (artifacts_dir/registry.jsonl) as a table, after every model has trained.

Logic: profile_enrichment.ml.workflows.registry_table.
"""

from profile_enrichment.ml import workflows


def model(dbt, session):
    dbt.config(materialized="table")
    # Referenced (not read) so that this runs after every training model of the run.
    dbt.ref("ml_churn_scores")
    dbt.ref("ml_conversion_scores")
    dbt.ref("ml_clv_scores")
    dbt.ref("ml_segments")
    as_of = workflows.as_of_from(dbt.ref("int_run_as_of_date")) or "1970-01-01"
    config = workflows.MLConfig.from_meta(dbt.config.get("meta"), as_of)
    return workflows.registry_table(workflows.open_registry(config))
