"""Lifetime value (BG/NBD + Gamma-Gamma) for every customer with a purchase.

Logic: profile_enrichment.ml.workflows.run_clv (tested in tests/test_workflows.py).
"""

from profile_enrichment.ml import workflows


def model(dbt, session):
    dbt.config(materialized="table")
    as_of = workflows.as_of_from(dbt.ref("int_run_as_of_date"))
    if as_of is None:  # no accepted events, or dbt build --empty
        return workflows.empty_output("ml_clv_scores")
    config = workflows.MLConfig.from_meta(dbt.config.get("meta"), as_of)
    with workflows.memory_slot(config):  # var ml_models_at_once
        features = workflows.to_pandas(dbt.ref("customer_features"))
        holdout = workflows.latest_snapshot(
            dbt.ref("int_training_examples").filter("future_revenue is not null")
        )
        output = workflows.run_clv(features, workflows.open_registry(config), config, holdout)
    return output
