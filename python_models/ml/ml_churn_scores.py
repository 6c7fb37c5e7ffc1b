"""Churn propensity: trained on matured snapshots of customers who had purchased.

Logic: profile_enrichment.ml.workflows.run_propensity (training, guardrails, registry, scoring).
"""

from profile_enrichment.ml import workflows


def model(dbt, session):
    dbt.config(materialized="table")
    as_of = workflows.as_of_from(dbt.ref("int_run_as_of_date"))
    if as_of is None:  # no accepted events, or dbt build --empty
        return workflows.empty_output("ml_churn_scores")
    config = workflows.MLConfig.from_meta(dbt.config.get("meta"), as_of)
    with workflows.memory_slot(config):  # var ml_models_at_once
        features, _ = workflows.feature_lists(dbt.ref("feature_catalog"))
        training = workflows.bounded_rows(
            dbt.ref("int_training_examples").filter("is_churn_eligible and is_churned is not null"),
            config,
        )
        scoring = workflows.to_pandas(dbt.ref("customer_features"))
        registry = workflows.open_registry(config)
        output = workflows.run_propensity("churn", training, scoring, features, registry, config)
    return output
