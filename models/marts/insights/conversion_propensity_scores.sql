{#- Conversion propensity for customers without a recent purchase. Contracted view of ml_conversion_scores. -#}
{{ profile_enrichment.propensity_scores('conversion') }}
