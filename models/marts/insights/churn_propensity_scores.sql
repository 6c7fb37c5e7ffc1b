{#- Churn propensity for customers with at least one purchase. Contracted view of ml_churn_scores. -#}
{{ profile_enrichment.propensity_scores('churn') }}
