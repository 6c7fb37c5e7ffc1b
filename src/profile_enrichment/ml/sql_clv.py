"""Lifetime value in SQL: the closed-form parts of BG/NBD + Gamma-Gamma.

Two of the four lifetime-value outputs are closed forms of the fitted parameters and the
customer's (x, t_x, T, m), so they compile to plain SQL and run inside any engine:

* ``clv_probability_alive``: P(alive | x, t_x, T) = 1 / (1 + [x>0] a/(b+x-1)
  ((alpha+T)/(alpha+t_x))^(r+x)) (Fader, Hardie & Lee, note 021), written as a logistic of
  the log-odds as :meth:`~profile_enrichment.ml.clv.BetaGeoModel.probability_alive` does;
* ``clv_expected_order_value``: the Gamma-Gamma E[Z | x, m] = (1 - w) p v / (q - 1) + w m
  with w = p x / (p x + q - 1) (note 025), with the same rule for non-positive spend as
  :func:`~profile_enrichment.ml.workflows.predict_clv`.

``clv_expected_purchases`` (FHL 2005 eq. 10) and the discounted ``clv_predicted_value``
need the Gauss hypergeometric function 2F1, which no SQL engine has: they stay in Python
(ml_clv_scores). Constants are written with the dialects of
:mod:`profile_enrichment.ml.sql_scoring`, so they read back to the same doubles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from profile_enrichment.ml.sql_scoring import EXP_CLAMP, Dialect, _dialect

__all__ = ["CLV_SQL_COLUMNS", "clv_select_sql"]

CLV_SQL_COLUMNS = ["customer_id", "clv_probability_alive", "clv_expected_order_value"]


def clv_select_sql(params: Mapping[str, Any], dialect: str | Dialect, relation: str) -> str:
    """One ``SELECT`` over ``relation`` (customer_features rows) returning, for every buyer
    (``repeat_purchase_days`` not null), ``customer_id``, ``clv_probability_alive`` and
    ``clv_expected_order_value`` as ml_clv_scores computes them. ``params``: the clv
    champion's registry parameters (r, alpha, a, b, p, q, gamma)."""
    d = _dialect(dialect)
    r, alpha, a, b = (float(params[k]) for k in ("r", "alpha", "a", "b"))
    if abs(a - 1.0) < 1e-7:  # BetaGeoModel._params: the removable singularity at a = 1
        a = 1.0 + 1e-7
    p, q, v = (float(params[k]) for k in ("p", "q", "gamma"))
    population_mean = p * v / (q - 1.0)  # GammaGammaModel.population_mean_, same operations
    n = d.number
    double = d.double_type
    log_odds = (
        f"ln({n(a)}) - ln({n(b)} + inputs.x_at_least_one - {n(1.0)})"
        f" + ({n(r)} + inputs.x) * (ln({n(alpha)} + inputs.age) - ln({n(alpha)} + inputs.t_x))"
    )
    return f"""with inputs as (
    select
        src.{d.ident("customer_id")} as customer_id,
        cast(src.{d.ident("repeat_purchase_days")} as {double}) as x,
        greatest(cast(src.{d.ident("repeat_purchase_days")} as {double}), {n(1.0)})
            as x_at_least_one,
        cast(src.{d.ident("repeat_recency_days")} as {double}) as t_x,
        cast(src.{d.ident("customer_tenure_days")} as {double}) as age,
        coalesce(cast(src.{d.ident("repeat_average_value")} as {double}), {n(0.0)}) as m
    from {relation} as src
    where src.{d.ident("repeat_purchase_days")} is not null
),

spend as (
    select
        inputs.*,
        -- Gamma-Gamma is fitted on positive spend: other buyers get the population mean
        case when inputs.m > {n(0.0)} then inputs.x else {n(0.0)} end as x_spend,
        case when inputs.m > {n(0.0)} then inputs.m else {n(0.0)} end as m_spend
    from inputs
),

final as (
    select
        spend.customer_id,
        cast(case
            when spend.x > {n(0.0)}
                then {n(1.0)} / ({n(1.0)} + exp(least({log_odds.replace("inputs.", "spend.")},
                    {n(EXP_CLAMP)})))
            else {n(1.0)}
        end as {double}) as clv_probability_alive,
        cast(
            ({n(1.0)} - {n(p)} * spend.x_spend / ({n(p)} * spend.x_spend + {n(q)} - {n(1.0)}))
            * {n(population_mean)}
            + {n(p)} * spend.x_spend / ({n(p)} * spend.x_spend + {n(q)} - {n(1.0)})
            * case when spend.x_spend > {n(0.0)} then spend.m_spend else {n(0.0)} end
        as {double}) as clv_expected_order_value
    from spend
)

select * from final
"""
