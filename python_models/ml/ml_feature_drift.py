"""Feature drift: PSI of every model feature between training snapshots and today's population.

Logic: profile_enrichment.ml.workflows.run_drift.
"""

from profile_enrichment.ml import workflows


def model(dbt, session):
    dbt.config(materialized="table")
    as_of = workflows.as_of_from(dbt.ref("int_run_as_of_date"))
    if as_of is None:  # no accepted events, or dbt build --empty
        return workflows.empty_output("ml_feature_drift")
    config = workflows.MLConfig.from_meta(dbt.config.get("meta"), as_of)
    with workflows.memory_slot(config):  # var ml_models_at_once
        features, _ = workflows.feature_lists(dbt.ref("feature_catalog"))
        columns = features or ["customer_id"]
        training = workflows.bounded_rows(
            dbt.ref("int_training_examples").filter(
                "is_churned is not null or is_converted is not null"
            ),
            config,
            columns,
        )
        scoring = workflows.to_pandas(dbt.ref("customer_features"), columns)
        output = workflows.run_drift(training, scoring, features, config)
    return output
