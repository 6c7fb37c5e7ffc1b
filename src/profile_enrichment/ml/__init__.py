"""Model logic: propensity, lifetime value, segments, drift and the model registry.

dbt Python models in ``python_models/ml`` are thin wrappers over these modules.
"""
