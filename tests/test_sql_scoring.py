"""The compiled scoring SQL gives the same numbers as score_propensity, in every dialect.

DuckDB runs here always; it also accepts the PostgreSQL (``float8 '…'``) and Spark
(backtick) renderings, so all three are executed. `make test-engines` also runs the
PostgreSQL rendering on a real server (engines/local_postgres.py), through ``psql``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
import re
import shutil
import struct
import subprocess
from dataclasses import replace

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression

from profile_enrichment.errors import UserError
from profile_enrichment.ml.propensity import (
    PropensityConfig,
    PropensityResult,
    score_propensity,
    train_propensity,
)
from profile_enrichment.ml.sql_scoring import (
    DIALECTS,
    EXP_CLAMP,
    _round_half_even_sql,
    compile_margin_sql,
    compile_probability_sql,
    compile_scoring,
    scoring_select_sql,
)
from test_propensity import (  # the training frame and thread limit of the propensity tests
    FEATURES,
    _one_openmp_thread,  # noqa: F401  (autouse fixture)
    make_frame,
)

CASES = [
    ("logistic", "sigmoid"),
    ("logistic", "isotonic"),
    ("hist_gradient_boosting", "sigmoid"),
    ("hist_gradient_boosting", "isotonic"),
]
# the default model (200 trees of <= 15 leaves); factors are not compiled, so skip them
CONFIG = PropensityConfig(n_factors=0)
OUTPUT = ["customer_id", "margin", "probability", "score", "percentile", "bucket"]


@pytest.fixture(scope="module")
def training_frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def results(training_frame) -> dict[tuple[str, str], PropensityResult]:
    out = {}
    for candidate, calibration in CASES:
        config = replace(CONFIG, candidates=(candidate,), calibration=calibration)
        out[candidate, calibration] = train_propensity(
            training_frame, FEATURES, "is_churned", config
        )
    return out


def _thresholds(result: PropensityResult) -> list[tuple[int, float]]:
    pairs = set()
    for (predictor,) in result.model._predictors:
        split = predictor.nodes[~predictor.nodes["is_leaf"].astype(bool)]
        pairs.update(
            zip(split["feature_idx"].tolist(), split["num_threshold"].tolist(), strict=True)
        )
    return sorted(pairs)


def scoring_frame(result: PropensityResult) -> pd.DataFrame:
    """Ordinary rows plus the hard ones: duplicates, all-missing, huge values, thresholds."""
    base = make_frame(n_customers=400, dates=("2025-04-01",), seed=11).drop(
        columns=["as_of_date", "is_churned"]
    )
    dup = base.iloc[:20].assign(customer_id=lambda f: f["customer_id"] + "_dup")
    empty = base.iloc[:2].assign(customer_id=["nan0", "nan1"])
    empty[FEATURES] = np.nan
    huge = base.iloc[:4].assign(customer_id=["huge0", "huge1", "huge2", "huge3"])
    huge["recency_days"] = [1e6, -1e6, 1e300, -1e300]
    # the calibrator's own rows: their margins are exactly its isotonic knots
    valid = make_frame()
    valid = valid[(valid["as_of_date"] == valid["as_of_date"].max()) & valid["is_churned"].notna()]
    valid = valid.drop(columns=["as_of_date", "is_churned"])
    parts = [base, dup, empty, huge, valid.assign(customer_id="val" + valid["customer_id"])]
    if result.candidate == "hist_gradient_boosting":
        # every split threshold exactly (goes left) and one ulp above it (goes right)
        pairs = _thresholds(result)
        for name, bump in (("thr", lambda t: t), ("ulp", lambda t: np.nextafter(t, np.inf))):
            rows = base.iloc[np.arange(len(pairs)) % len(base)].reset_index(drop=True)
            for i, (feature, threshold) in enumerate(pairs):
                rows.loc[i, FEATURES[feature]] = bump(threshold)
            parts.append(rows.assign(customer_id=[f"{name}{i}" for i in range(len(rows))]))
    return pd.concat(parts, ignore_index=True)


def run_duckdb(sql: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Run ``sql`` over ``frame`` as table ``scoring_frame``: half the missing values as
    NULL, half as NaN (pandas NaN arrives in DuckDB as NULL)."""
    con = duckdb.connect()
    con.register("frame_view", frame)
    con.execute("create table scoring_frame as select * from frame_view")
    nan_ids = frame["customer_id"].iloc[::2].tolist()
    for col in FEATURES:
        con.execute(
            f"update scoring_frame set \"{col}\" = cast('NaN' as double) "
            f'where "{col}" is null and customer_id in (select unnest(?))',
            [nan_ids],
        )
    assert con.execute(
        f'select count(*) from scoring_frame where isnan("{FEATURES[0]}")'
    ).fetchone()[0]
    out = con.execute(sql).df()
    con.close()
    return out


def assert_same_scores(
    got: pd.DataFrame,
    expected: pd.DataFrame,
    exact_margin: bool,
    exact_probability: bool = False,
) -> None:
    assert list(got.columns) == OUTPUT
    assert len(got) == len(expected)
    got = got.set_index("customer_id").loc[expected["customer_id"]]
    margin = got["margin"].to_numpy(dtype=float)
    if exact_margin:
        np.testing.assert_array_equal(margin, expected["margin"].to_numpy())
    else:
        np.testing.assert_allclose(margin, expected["margin"], rtol=1e-12, atol=1e-12)
    probability = got["probability"].to_numpy(dtype=float)
    if exact_probability:
        np.testing.assert_array_equal(probability, expected["probability"])
    np.testing.assert_allclose(probability, expected["probability"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got["score"].to_numpy(np.int64), expected["score"])
    np.testing.assert_array_equal(got["percentile"].to_numpy(np.int64), expected["percentile"])
    np.testing.assert_array_equal(got["bucket"].astype(str), expected["bucket"].astype(str))


def python_scores(result: PropensityResult, frame: pd.DataFrame) -> pd.DataFrame:
    out = score_propensity(result, frame)
    out["margin"] = result.margin(frame[FEATURES].to_numpy(dtype=float, na_value=np.nan))
    return out


# --------------------------------------------------------------------------------------
# Equality with Python
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize(("candidate", "calibration"), CASES)
def test_sql_equals_python(results, candidate, calibration, dialect) -> None:
    """Every rendering (run in DuckDB) equals score_propensity on the hard rows."""
    result = results[candidate, calibration]
    assert result.candidate == candidate
    frame = scoring_frame(result)
    expected = python_scores(result, frame)
    got = run_duckdb(scoring_select_sql(result, dialect, "scoring_frame"), frame)
    # the hgb sum is in sklearn's order, so its margin is bit-for-bit the same, and so is
    # the isotonic interpolation (plain arithmetic, numpy's formula, knots included)
    is_tree = candidate == "hist_gradient_boosting"
    assert_same_scores(
        got, expected, is_tree, exact_probability=is_tree and calibration == "isotonic"
    )


def test_the_hard_rows_are_really_hard(results) -> None:
    """The rows above do reach both sides of the thresholds, the overflow and ties."""
    logistic = results["logistic", "sigmoid"]
    scores = python_scores(logistic, scoring_frame(logistic)).set_index("customer_id")
    assert abs(scores.loc["huge2", "margin"]) > 1e290  # exp(a * m + b) overflows in numpy
    assert {scores.loc["huge2", "probability"], scores.loc["huge3", "probability"]} == {0.0, 1.0}

    tree = results["hist_gradient_boosting", "isotonic"]
    frame = scoring_frame(tree)
    scores = python_scores(tree, frame)
    at = scores["customer_id"].str.startswith("thr").to_numpy()
    above = scores["customer_id"].str.startswith("ulp").to_numpy()
    assert at.sum() == above.sum() == len(_thresholds(tree)) > 50
    # one ulp decides the side of a split: the margins differ on most such pairs
    differ = scores.loc[at, "margin"].to_numpy() != scores.loc[above, "margin"].to_numpy()
    assert differ.mean() > 0.5
    knots = tree.calibrator.calibrated_classifiers_[0].calibrators[0].X_thresholds_
    assert np.isin(knots, scores["margin"]).mean() > 0.9
    # isotonic steps tie many probabilities; the margin breaks the ties of the percentile
    assert scores["probability"].nunique() < len(scores) / 4
    assert scores["percentile"].nunique() > scores["probability"].nunique()


def test_score_ties_round_half_to_even(results) -> None:
    """An isotonic map onto multiples of 1/8 puts scores exactly on .5 (12.5 -> 12)."""
    result = copy.deepcopy(results["logistic", "isotonic"])
    frame = scoring_frame(result)
    margin = result.margin(frame[FEATURES].to_numpy(dtype=float, na_value=np.nan))
    x = np.quantile(margin[np.abs(margin) < 1e6], np.linspace(0, 1, 8))
    iso = IsotonicRegression(out_of_bounds="clip").fit(x, np.repeat([1, 3, 5, 7], 2) / 8)
    result.calibrator.calibrated_classifiers_[0].calibrators[0] = iso
    expected = python_scores(result, frame)
    hundred_p = 100 * expected["probability"].to_numpy()
    assert set(hundred_p[hundred_p % 1 == 0.5]) == {12.5, 37.5, 62.5, 87.5}
    for dialect in DIALECTS:
        got = run_duckdb(scoring_select_sql(result, dialect, "scoring_frame"), frame)
        assert_same_scores(got, expected, exact_margin=False)


def test_round_half_even_expression_matches_numpy() -> None:
    ties = np.arange(0, 101) + 0.5
    values = np.concatenate(
        [ties, np.nextafter(ties, 0), np.nextafter(ties, 200), np.linspace(0, 100, 1001)]
    )
    con = duckdb.connect()
    con.register("v", pd.DataFrame({"y": values}))
    for d in DIALECTS.values():
        got = con.execute(
            f"select cast({_round_half_even_sql('y', d)} as bigint) from v"
        ).fetchnumpy()
        np.testing.assert_array_equal(next(iter(got.values())), np.rint(values).astype(np.int64))


def test_sigmoid_never_overflows_exp(results) -> None:
    """PostgreSQL raises on exp(> 709.78); emulate that in DuckDB and score huge margins."""
    result = results["logistic", "sigmoid"]
    probability = compile_probability_sql(result, "duckdb", "m")
    assert probability.count("exp(") == 1
    con = duckdb.connect()
    con.execute(
        "create macro strict_exp(x) as "
        "case when x > 709.78 then error('value out of range: overflow') else exp(x) end"
    )
    margins = np.array([-1e300, -1e6, -800.0, -1.0, 0.0, 2.5, 800.0, 1e6, 1e300])
    con.register("t", pd.DataFrame({"m": margins}))
    got = con.execute(f"select {probability.replace('exp(', 'strict_exp(')} from t").fetchnumpy()
    expected = result.probability_from_margin(margins)
    assert {expected[0], expected[-1]} == {0.0, 1.0}
    np.testing.assert_allclose(next(iter(got.values())), expected, rtol=0, atol=1e-300)
    # without the clamp, the same query fails like PostgreSQL would
    bare = f"1 / (1 + strict_exp({float(EXP_CLAMP) * 2}))"
    with pytest.raises(duckdb.Error, match="overflow"):
        con.execute(f"select {bare}").fetchall()


# --------------------------------------------------------------------------------------
# Dialects and literals
# --------------------------------------------------------------------------------------

AWKWARD = [
    0.1, 1 / 3, -2.5, -0.0, 0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
    -1.7976931348623157e308, 123456789.12345679, 1e-7, 1e22, math.inf, -math.inf,
]  # fmt: skip


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_literals_read_back_to_the_same_double(dialect) -> None:
    d = DIALECTS[dialect]
    con = duckdb.connect()
    for x in AWKWARD:
        (got,) = con.execute(f"select {d.number(x)}").fetchone()
        assert struct.pack("<d", got) == struct.pack("<d", x), (x, d.number(x))


def _unquoted(sql: str) -> str:
    return re.sub(r"'[^']*'", "''", sql)


@pytest.mark.parametrize(("candidate", "calibration"), CASES)
def test_float_literals_are_doubles_in_every_dialect(results, candidate, calibration) -> None:
    """Postgres: no bare decimal (it would be NUMERIC). DuckDB/Spark: all have an exponent
    (Spark reads 1.5 as DECIMAL). Identifiers are quoted per dialect."""
    result = results[candidate, calibration]
    for dialect, d in DIALECTS.items():
        sql = _unquoted(scoring_select_sql(result, dialect, "scoring_frame"))
        body = re.sub(r'"[^"]*"|`[^`]*`', "q", sql)
        decimals = re.findall(r"(?<![\w.])\d+\.\d*(?:e[-+]?\d+)?", body)
        if dialect == "postgres":
            assert decimals == [] and body.count("float8 ''") > 10
        else:
            assert decimals and all("e" in lit for lit in decimals), dialect
        assert f"{d.quote}{FEATURES[0]}{d.quote}" in sql
    assert "`" not in scoring_select_sql(result, "duckdb", "t")
    assert "`recency_days`" in scoring_select_sql(result, "spark", "t")


def test_margin_expression_is_usable_alone(results) -> None:
    result = results["hist_gradient_boosting", "sigmoid"]
    frame = scoring_frame(result).iloc[:50]
    margin = compile_margin_sql(result, "duckdb", "f")
    con = duckdb.connect()
    con.register("f", frame)
    got = con.execute(f"select {margin} from f").fetchnumpy()
    np.testing.assert_array_equal(
        next(iter(got.values())), result.margin(frame[FEATURES].to_numpy(dtype=float))
    )


def test_compiled_scoring_is_identified_by_its_sha256(results) -> None:
    result = results["hist_gradient_boosting", "isotonic"]
    first = compile_scoring(result, "postgres", "scoring_frame")
    again = compile_scoring(result, "postgres", "scoring_frame")
    assert first == again
    assert (first.model_kind, first.calibration, first.dialect) == (
        "hist_gradient_boosting",
        "isotonic",
        "postgres",
    )
    assert first.feature_cols == tuple(FEATURES)
    assert first.sql_sha256 == hashlib.sha256(first.sql.encode()).hexdigest()
    assert compile_scoring(result, "duckdb", "scoring_frame").sql_sha256 != first.sql_sha256


# --------------------------------------------------------------------------------------
# What does not compile
# --------------------------------------------------------------------------------------


def test_unsupported_inputs_are_user_errors(results) -> None:
    result = results["hist_gradient_boosting", "sigmoid"]
    with pytest.raises(UserError, match="unknown SQL dialect"):
        scoring_select_sql(result, "oracle", "t")
    with pytest.raises(UserError, match="cannot be used"):
        scoring_select_sql(result, "spark", "t", key_column="odd`name")
    with pytest.raises(UserError, match="also a feature"):
        scoring_select_sql(result, "duckdb", "t", key_column=FEATURES[0])

    categorical = copy.deepcopy(result)
    nodes = categorical.model._predictors[3][0].nodes
    nodes["is_categorical"][0] = 1
    with pytest.raises(UserError, match="categorical"):
        compile_margin_sql(categorical, "duckdb", "t")

    odd_calibrator = copy.deepcopy(result)
    odd_calibrator.calibrator.calibrated_classifiers_[0].calibrators[0] = object()
    with pytest.raises(UserError, match="calibrator object"):
        compile_probability_sql(odd_calibrator, "duckdb", "m")

    odd_pipeline = copy.deepcopy(results["logistic", "sigmoid"])
    odd_pipeline.model.steps.pop(1)  # no scaler
    with pytest.raises(UserError, match="SimpleImputer -> StandardScaler"):
        compile_margin_sql(odd_pipeline, "duckdb", "t")


# --------------------------------------------------------------------------------------
# A real PostgreSQL server
# --------------------------------------------------------------------------------------


def _psql(dsn: str, script: str) -> str:
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn],
        input=script,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def postgres_dsn():
    """A throwaway PostgreSQL server on 127.0.0.1 (engines.local_postgres); `make test-engines`."""
    from profile_enrichment.engines.local_postgres import LocalPostgres, pg_bindir

    if pg_bindir() is None or shutil.which("psql") is None:
        pytest.fail("PostgreSQL is not installed: run `make postgres` (make test-engines does)")
    server = LocalPostgres().start()
    env = server.env()
    yield f"host={env['PE_PG_HOST']} port={env['PE_PG_PORT']} user={env['PE_PG_USER']} dbname={env['PE_PG_DBNAME']}"
    server.stop()


@pytest.mark.engines
@pytest.mark.parametrize(("candidate", "calibration"), CASES)
def test_postgres_server_equals_python(results, candidate, calibration, postgres_dsn) -> None:
    result = results[candidate, calibration]
    frame = scoring_frame(result)
    expected = python_scores(result, frame)
    pg = DIALECTS["postgres"]

    def value(x: float, i: int, numeric: bool) -> str:
        if math.isnan(x):
            return "null" if i % 2 else "'NaN'"  # both kinds of missing
        return f"'{x!r}'" if numeric else pg.number(x)

    # the last feature is NUMERIC, which the SQL casts: its decimal text reads back exactly
    numeric = [False] * (len(FEATURES) - 1) + [True]
    rows = ",\n".join(
        f"('{row[0]}', "
        + ", ".join(value(float(x), i, n) for x, n in zip(row[1:], numeric, strict=True))
        + ")"
        for i, row in enumerate(frame[["customer_id", *FEATURES]].itertuples(index=False))
    )
    columns = ", ".join(
        f'"{c}" {"numeric" if n else "double precision"}'
        for c, n in zip(FEATURES, numeric, strict=True)
    )
    sql = scoring_select_sql(result, "postgres", "scoring_frame").rstrip()
    script = (
        f"create temp table scoring_frame (customer_id text, {columns});\n"
        f"insert into scoring_frame values\n{rows};\n"
        f"copy ({sql}) to stdout with (format csv, header);\n"
    )
    out = pd.read_csv(
        io.StringIO(_psql(postgres_dsn, script)),
        dtype={"customer_id": str, "bucket": str},
    )
    is_tree = candidate == "hist_gradient_boosting"
    assert_same_scores(
        out, expected, is_tree, exact_probability=is_tree and calibration == "isotonic"
    )
