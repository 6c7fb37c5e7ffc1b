"""Compile a trained propensity model to portable SQL, so scoring can run inside the warehouse.

:func:`scoring_select_sql` turns a :class:`~profile_enrichment.ml.propensity.PropensityResult`
into one ``SELECT`` that returns, per row of a relation, exactly what
:func:`~profile_enrichment.ml.propensity.score_propensity` returns: ``margin``,
``probability``, ``score``, ``percentile`` and ``bucket``. The influential factors stay in
Python (TreeSHAP does not compile to reasonable SQL).

What is compiled, and how it stays equal to Python:

* **Margin.** ``logistic``: the pipeline ``SimpleImputer -> StandardScaler ->
  LogisticRegression`` as ``sum(coef * (coalesce(x, fill) - mean) / scale) + intercept``.
  ``hist_gradient_boosting``: ``baseline + tree_1 + ... + tree_n``, each tree a nested
  ``case``, summed in sklearn's order so the sum is bit-for-bit the same. A split sends a
  row left when ``x <= threshold``; a missing value (SQL NULL, or NaN, which the SQL turns
  into NULL) goes where the tree's ``missing_go_to_left`` says, as in sklearn.
* **Calibration.** Sigmoid: ``1 / (1 + exp(a * margin + b))`` with the exponent clamped to
  +-700, so PostgreSQL never raises "value out of range: overflow" where numpy gives
  ``inf`` (the clamp changes the probability by less than 1e-300). Isotonic: numpy's
  ``np.interp`` over the calibrator's thresholds (flat outside them), as a balanced search
  of ``case`` expressions with the slopes computed in Python exactly as numpy does. The
  probability is clipped to [0, 1] where it could leave it.
* **Score, bucket, percentile.** ``score`` is ``100 * probability`` rounded half to even
  (``np.rint``) by an explicit expression, because ``round`` breaks ties differently per
  engine. ``percentile`` ranks by probability, then margin, with ties sharing the highest
  rank, through ``rank()`` / ``count(*)`` windows.

Portability: the SQL uses only ``case``, ``coalesce``, ``nullif``, ``exp``, ``floor``,
``ceil``, ``least`` / ``greatest``, arithmetic, ``cast`` and window functions, which
DuckDB, PostgreSQL 15 and Spark SQL 3.5/4 share. The differences live in :data:`DIALECTS`:
the 64-bit float type, identifier quotes and float literals (written with all 17
significant digits so they read back to the same double). Feature columns are cast to
64-bit floats, so integer or decimal columns work. Boolean features must be cast to an
integer first on PostgreSQL (it has no boolean-to-float cast).

Size: the default tree model (200 trees of at most 15 leaves) gives about 180k characters
(200k for PostgreSQL's typed literals). Spark's whole-stage code generation gives up on an
expression that large ("grows beyond 64 KB") and falls back to interpreted evaluation,
with a logged error but the same results.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from profile_enrichment.errors import UserError
from profile_enrichment.ml.propensity import PropensityResult

__all__ = [
    "DIALECTS",
    "EXP_CLAMP",
    "CompiledScoring",
    "Dialect",
    "compile_margin_sql",
    "compile_probability_sql",
    "compile_scoring",
    "scoring_select_sql",
]

# exp(700) ~ 1e304 is finite in every engine; 1 / (1 + exp(z)) for |z| > 700 differs from
# the unclamped value by less than 1e-300.
EXP_CLAMP = 700.0


@dataclass(frozen=True)
class Dialect:
    """What differs between SQL engines for this SQL: the float type, quotes and literals.

    ``typed_literals``: PostgreSQL reads every decimal literal (``1.5e-3`` too) as
    NUMERIC, so doubles are written ``float8 '1.5e-3'``. DuckDB and Spark read a literal
    with an exponent as DOUBLE (Spark reads ``1.5`` as DECIMAL), so there every literal
    gets an exponent.
    """

    name: str
    double_type: str
    quote: str
    typed_literals: bool

    def ident(self, name: str) -> str:
        """A quoted identifier. Names containing the quote character are refused."""
        if not name or self.quote in name or "\x00" in name:
            raise UserError(
                f"column name {name!r} cannot be used in generated {self.name} SQL",
                hint="rename the column to letters, digits and underscores",
            )
        return f"{self.quote}{name}{self.quote}"

    def number(self, value: float) -> str:
        """A DOUBLE literal that reads back to exactly ``value`` (incl. -0.0 and +-inf)."""
        x = float(value)
        if math.isnan(x):
            raise UserError("the model contains a NaN constant; it cannot be compiled to SQL")
        if math.isinf(x):
            text = "Infinity" if x > 0 else "-Infinity"
            return f"cast('{text}' as {self.double_type})"
        text = repr(x)  # shortest string that round-trips (at most 17 significant digits)
        if self.typed_literals:
            return f"float8 '{text}'"
        if "e" not in text:
            text += "e0"
        # parenthesised so that "x - -1e0" can never become the comment "x --1e0"
        return f"({text})" if text.startswith("-") else text

    def nan(self) -> str:
        return f"cast('NaN' as {self.double_type})"


DIALECTS: dict[str, Dialect] = {
    "duckdb": Dialect("duckdb", "double", '"', typed_literals=False),
    "postgres": Dialect("postgres", "double precision", '"', typed_literals=True),
    "spark": Dialect("spark", "double", "`", typed_literals=False),
}


def _dialect(dialect: str | Dialect) -> Dialect:
    if isinstance(dialect, Dialect):
        return dialect
    try:
        return DIALECTS[dialect]
    except KeyError:
        raise UserError(
            f"unknown SQL dialect {dialect!r}", hint=f"choose from {', '.join(DIALECTS)}"
        ) from None


def _col(d: Dialect, alias: str, name: str) -> str:
    return f"{alias}.{d.ident(name)}" if alias else d.ident(name)


# --------------------------------------------------------------------------------------
# Margin
# --------------------------------------------------------------------------------------


def _logistic_margin(result: PropensityResult, d: Dialect, alias: str) -> str:
    model = result.model
    steps = [step for _, step in model.steps]
    if [type(s) for s in steps] != [SimpleImputer, StandardScaler, LogisticRegression]:
        raise UserError(
            "only the pipeline SimpleImputer -> StandardScaler -> LogisticRegression "
            f"compiles to SQL, got {[type(s).__name__ for s in steps]}"
        )
    imputer, scaler, logistic = steps
    if imputer.add_indicator or not (
        isinstance(imputer.missing_values, float) and math.isnan(imputer.missing_values)
    ):
        raise UserError("the imputer must treat NaN as missing and add no indicator columns")
    fill = np.asarray(imputer.statistics_, dtype=np.float64)
    coef = np.asarray(logistic.coef_, dtype=np.float64)
    if coef.shape != (1, len(result.feature_cols)) or fill.shape != (len(result.feature_cols),):
        raise UserError(
            "the logistic model is not binary over the result's feature columns "
            "(was it fitted without keep_empty_features=True?)"
        )
    terms = []
    for j, name in enumerate(result.feature_cols):
        z = f"coalesce({_col(d, alias, name)}, {d.number(fill[j])})"
        if scaler.mean_ is not None:
            z = f"({z} - {d.number(scaler.mean_[j])})"
        if scaler.scale_ is not None:
            z = f"{z} / {d.number(scaler.scale_[j])}"
        terms.append(f"{d.number(coef[0, j])} * ({z})")
    return "\n    + ".join([*terms, d.number(logistic.intercept_[0])])


def _tree_sql(nodes: np.ndarray, i: int, columns: list[str], d: Dialect) -> str:
    node = nodes[i]
    if node["is_leaf"]:
        return d.number(node["value"])
    x = columns[int(node["feature_idx"])]
    left = _tree_sql(nodes, int(node["left"]), columns, d)
    right = _tree_sql(nodes, int(node["right"]), columns, d)
    threshold = float(node["num_threshold"])
    if threshold == math.inf:  # a "split on missing": every value goes left
        if node["missing_go_to_left"]:
            return left
        return f"case when {x} is not null then {left} else {right} end"
    condition = f"{x} <= {d.number(threshold)}"  # NULL <= t is unknown: the else branch
    if node["missing_go_to_left"]:
        condition = f"{x} is null or {condition}"
    return f"case when {condition} then {left} else {right} end"


def _hgb_margin(result: PropensityResult, d: Dialect, alias: str) -> str:
    model = result.model
    if model.n_trees_per_iteration_ != 1:
        raise UserError("only binary HistGradientBoostingClassifier models compile to SQL")
    if getattr(model, "_preprocessor", None) is not None or (
        model.is_categorical_ is not None and np.any(model.is_categorical_)
    ):
        raise UserError(
            "categorical features of HistGradientBoostingClassifier do not compile to SQL",
            hint="one-hot or ordinal-encode them in the feature mart",
        )
    if model.n_features_in_ != len(result.feature_cols):
        raise UserError("the model's feature count differs from the result's feature columns")
    columns = [_col(d, alias, name) for name in result.feature_cols]
    # sklearn: raw = 0 + baseline, then raw += tree_k in order; "+" associates left, so
    # the SQL sum rounds exactly like the Python one.
    terms = [d.number(np.asarray(model._baseline_prediction).ravel()[0])]
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        if np.any(nodes["is_categorical"][~nodes["is_leaf"].astype(bool)]):
            raise UserError("categorical tree splits do not compile to SQL")
        terms.append(_tree_sql(nodes, 0, columns, d))
    return "\n    + ".join(terms)


def compile_margin_sql(result: PropensityResult, dialect: str | Dialect, alias: str) -> str:
    """A SQL expression for the raw margin (``result.margin``) over ``alias.<feature>``.

    The feature columns must already be 64-bit floats with NULL (not NaN) for missing
    values, as the ``features`` CTE of :func:`scoring_select_sql` makes them; an empty
    ``alias`` refers to the bare column names.
    """
    d = _dialect(dialect)
    if isinstance(result.model, Pipeline):
        return _logistic_margin(result, d, alias)
    if isinstance(result.model, HistGradientBoostingClassifier):
        return _hgb_margin(result, d, alias)
    raise UserError(f"model type {type(result.model).__name__} does not compile to SQL")


# --------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------


def _calibration_map(result: PropensityResult) -> Any:
    """The 1-D map that ``result.probability_from_margin`` applies."""
    return result.calibrator.calibrated_classifiers_[0].calibrators[0]


def _sigmoid_sql(a: float, b: float, m: str, d: Dialect) -> str:
    # sklearn: expit(-(a * m + b)) = 1 / (1 + exp(a * m + b)); in (0, 1], so no clip
    z = f"{d.number(a)} * {m} + {d.number(b)}"
    hi, lo = d.number(EXP_CLAMP), d.number(-EXP_CLAMP)
    clamped = f"case when {z} > {hi} then {hi} when {z} < {lo} then {lo} else {z} end"
    return f"1 / (1 + exp({clamped}))"


def _isotonic_sql(iso: IsotonicRegression, m: str, d: Dialect) -> str:
    xp = np.asarray(iso.X_thresholds_, dtype=np.float64)
    fp = np.asarray(iso.y_thresholds_, dtype=np.float64)
    if xp.size == 1:  # sklearn predicts the single value everywhere
        return d.number(min(max(fp[0], 0.0), 1.0))
    if not np.all(np.diff(xp) > 0) or not np.all(np.isfinite(xp)) or iso.out_of_bounds != "clip":
        raise UserError("the isotonic calibrator has unsorted or non-finite thresholds")
    if (iso.X_min_, iso.X_max_) != (xp[0], xp[-1]):
        raise UserError("the isotonic calibrator's clip range differs from its thresholds")

    def clip(lo_hi: tuple[float, float], expr: str) -> str:
        if min(lo_hi) <= 0.0:  # rounding could leave [0, 1] only next to a bound
            expr = f"greatest({d.number(0.0)}, {expr})"
        if max(lo_hi) >= 1.0:
            expr = f"least({d.number(1.0)}, {expr})"
        return expr

    # pieces[k] = (left end, SQL valid from there up to the next piece's left end):
    # numpy's interp: dy[j] at x == dx[j], else slope_j * (x - dx[j]) + dy[j].
    pieces: list[tuple[float, str]] = []
    for j in range(xp.size - 1):
        if fp[j] == fp[j + 1]:
            expr = d.number(min(max(fp[j], 0.0), 1.0))
        else:
            slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])  # as numpy computes it
            if not math.isfinite(slope):
                raise UserError("the isotonic calibrator has a non-finite slope")
            expr = clip(
                (fp[j], fp[j + 1]),
                f"{d.number(slope)} * ({m} - {d.number(xp[j])}) + {d.number(fp[j])}",
            )
        if pieces and pieces[-1][1] == expr:  # merge equal flat steps
            continue
        pieces.append((float(xp[j]), expr))

    def search(lo: int, hi: int) -> str:
        if lo == hi:
            return pieces[lo][1]
        mid = (lo + hi + 1) // 2
        return (
            f"case when {m} < {d.number(pieces[mid][0])} then {search(lo, mid - 1)} "
            f"else {search(mid, hi)} end"
        )

    first, last = (d.number(min(max(v, 0.0), 1.0)) for v in (fp[0], fp[-1]))
    return (
        f"case when {m} <= {d.number(xp[0])} then {first} "
        f"when {m} >= {d.number(xp[-1])} then {last} "
        f"else {search(0, len(pieces) - 1)} end"
    )


def compile_probability_sql(
    result: PropensityResult, dialect: str | Dialect, margin_expr: str
) -> str:
    """A SQL expression for ``result.probability_from_margin(margin)``.

    ``margin_expr`` appears many times in the output, so pass a column reference, not the
    margin expression itself.
    """
    d = _dialect(dialect)
    mapping = _calibration_map(result)
    if isinstance(mapping, IsotonicRegression):
        return _isotonic_sql(mapping, margin_expr, d)
    if type(mapping).__name__ == "_SigmoidCalibration":
        return _sigmoid_sql(float(mapping.a_), float(mapping.b_), margin_expr, d)
    raise UserError(f"calibrator {type(mapping).__name__} does not compile to SQL")


def _round_half_even_sql(y: str, d: Dialect) -> str:
    """``np.rint(y)`` for y >= 0: ``round`` breaks .5 ties differently per engine.

    ``y - floor(y)`` is exact in binary floating point, so the tie test is exact.
    """
    f = f"floor({y})"
    half = d.number(0.5)
    return (
        f"case when {y} - {f} > {half} then {f} + 1 "
        f"when {y} - {f} < {half} then {f} "
        f"else 2 * ceil({f} / 2) end"
    )


# --------------------------------------------------------------------------------------
# The whole SELECT
# --------------------------------------------------------------------------------------


def scoring_select_sql(
    result: PropensityResult,
    dialect: str | Dialect,
    relation: str,
    key_column: str = "customer_id",
) -> str:
    """One ``SELECT`` scoring every row of ``relation`` like :func:`score_propensity`.

    Columns: ``key_column``, ``margin``, ``probability`` (doubles), ``score``,
    ``percentile`` (bigint), ``bucket`` ('high' / 'medium' / 'low'). ``relation`` is
    inserted as written (a table name, a subquery in parentheses, or ``{{ ref(...) }}`` in
    a dbt model), so it must be trusted text. The percentile ranks the rows of this
    ``SELECT``, i.e. of the whole relation, as Python ranks its whole scoring frame.
    The influential factors (``factor_k_*``) are not compiled: they stay in Python.
    """
    d = _dialect(dialect)
    key = d.ident(key_column)
    if key_column in result.feature_cols:
        raise UserError(f"the key column {key_column!r} is also a feature column")
    features = ",\n".join(
        f"        nullif(cast(src.{d.ident(c)} as {d.double_type}), {d.nan()}) as {d.ident(c)}"
        for c in result.feature_cols
    )
    margin = compile_margin_sql(result, d, "features").replace("\n", "\n        ")
    probability = compile_probability_sql(result, d, "margins.margin")
    score = _round_half_even_sql("(100 * probabilities.probability)", d)
    pct = (
        "ceil(cast(100 * (ranked.n_rows - ranked.rank_desc + 1) as "
        f"{d.double_type}) / cast(ranked.n_rows as {d.double_type}))"
    )
    config = result.config
    return f"""with features as (
    select
        src.{key} as {key},
{features}
    from {relation} as src
),

margins as (
    -- the window function also keeps PostgreSQL from pulling this CTE up into the next
    -- one, which would copy the whole margin expression into every use of "margin"
    select
        features.{key},
        cast(
            {margin}
        as {d.double_type}) as margin,
        count(*) over () as n_rows
    from features
),

probabilities as (
    select
        margins.{key},
        margins.margin,
        margins.n_rows,
        cast({probability} as {d.double_type}) as probability
    from margins
),

ranked as (
    select
        probabilities.{key},
        probabilities.margin,
        probabilities.probability,
        cast({score} as bigint) as score,
        rank() over (
            order by probabilities.probability desc, probabilities.margin desc
        ) as rank_desc,
        probabilities.n_rows
    from probabilities
),

final as (
    select
        ranked.{key},
        ranked.margin,
        ranked.probability,
        ranked.score,
        cast(
            case when {pct} < 1 then 1 when {pct} > 100 then 100 else {pct} end
        as bigint) as percentile,
        case
            when ranked.score >= {int(config.bucket_high)} then 'high'
            when ranked.score >= {int(config.bucket_medium)} then 'medium'
            else 'low'
        end as bucket
    from ranked
)

select * from final
"""


@dataclass(frozen=True)
class CompiledScoring:
    """A compiled scorer, ready to store beside the model in a registry table."""

    model_kind: str
    calibration: str
    dialect: str
    feature_cols: tuple[str, ...]
    key_column: str
    sql: str
    sql_sha256: str


def compile_scoring(
    result: PropensityResult,
    dialect: str,
    relation: str,
    key_column: str = "customer_id",
) -> CompiledScoring:
    """:func:`scoring_select_sql` plus what identifies it (model kind, SHA-256 of the SQL)."""
    sql = scoring_select_sql(result, dialect, relation, key_column)
    mapping = _calibration_map(result)
    return CompiledScoring(
        model_kind=result.candidate,
        calibration="isotonic" if isinstance(mapping, IsotonicRegression) else "sigmoid",
        dialect=_dialect(dialect).name,
        feature_cols=tuple(result.feature_cols),
        key_column=key_column,
        sql=sql,
        sql_sha256=hashlib.sha256(sql.encode("utf-8")).hexdigest(),
    )
