"""Validation rows of the churn and conversion champions (label + cross-fitted probability).

Logic: profile_enrichment.ml.workflows.propensity_validation_table. Read by the model report.
"""

from profile_enrichment.ml import workflows


def model(dbt, session):
    dbt.config(materialized="table")
    # Referenced (not read) so that this runs after both propensity models have trained.
    dbt.ref("ml_churn_scores")
    dbt.ref("ml_conversion_scores")
    as_of = workflows.as_of_from(dbt.ref("int_run_as_of_date")) or "1970-01-01"
    config = workflows.MLConfig.from_meta(dbt.config.get("meta"), as_of)
    return workflows.propensity_validation_table(workflows.open_registry(config))
