"""The champions compiled to SQL, one SELECT per model and engine, after this run's training.

Logic: profile_enrichment.ml.workflows.compiled_champions (ml/sql_scoring.py, ml/sql_clv.py).
"""

from profile_enrichment.ml import workflows


def model(dbt, session):
    dbt.config(materialized="table")
    # Referenced (not read) so that this runs after the models it compiles have trained.
    dbt.ref("ml_churn_scores")
    dbt.ref("ml_conversion_scores")
    dbt.ref("ml_clv_scores")
    as_of = workflows.as_of_from(dbt.ref("int_run_as_of_date")) or "1970-01-01"
    config = workflows.MLConfig.from_meta(dbt.config.get("meta"), as_of)
    return workflows.compiled_champions(workflows.open_registry(config), config.artifacts_dir)
