"""Profile Enrichment: an open, local-first replacement for AEP Data Science Workspace.

XDM ExperienceEvents go in, a point-in-time SQL feature store (dbt + DuckDB) is built,
dbt Python models train and score propensity, lifetime value and segments, and the results
go back out as XDM profile-attribute batches.
"""

__version__ = "0.1.0"
