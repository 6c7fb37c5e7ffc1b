"""Customer segments: k-means on the features tagged `segmentation: true` in YAML.

Logic: profile_enrichment.ml.workflows.run_segments.
"""

from profile_enrichment.ml import workflows


def model(dbt, session):
    dbt.config(materialized="table")
    as_of = workflows.as_of_from(dbt.ref("int_run_as_of_date"))
    if as_of is None:  # no accepted events, or dbt build --empty
        return workflows.empty_output("ml_segments")
    config = workflows.MLConfig.from_meta(dbt.config.get("meta"), as_of)
    with workflows.memory_slot(config):  # var ml_models_at_once
        _, segmentation = workflows.feature_lists(dbt.ref("feature_catalog"))
        features = workflows.to_pandas(dbt.ref("customer_features"))
        output = workflows.run_segments(
            features, segmentation, workflows.open_registry(config), config
        )
    return output
