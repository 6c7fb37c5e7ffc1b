"""Known-answer tests for the explanations: exact linear contributions and TreeSHAP."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from profile_enrichment.ml.explain import (
    LinearExplainer,
    TreeShapExplainer,
    _cells,
    _tree_shap_recursive,
    importance_labels,
    top_factors,
)


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread():
    """HistGradientBoosting's OpenMP threads crawl when the shared cores are busy."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def _data(n: int = 1500, n_features: int = 4, seed: int = 0, nan_rate: float = 0.1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    clean = X.copy()
    X[rng.random(X.shape) < nan_rate] = np.nan
    logit = clean[:, 0] - clean[:, 1] + clean[:, 1] * clean[:, 2] + (np.isnan(X[:, 2]) * 1.5)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def _hgb(X, y, **kw) -> HistGradientBoostingClassifier:
    params = {"max_iter": 20, "max_leaf_nodes": 15, "early_stopping": False, "random_state": 0}
    params.update(kw)
    return HistGradientBoostingClassifier(**params).fit(X, y)


def _tree_outputs(model: HistGradientBoostingClassifier, X: np.ndarray) -> np.ndarray:
    """(rows, trees) raw outputs of each tree, computed by scikit-learn itself."""
    n_features = X.shape[1]
    no_cats = np.zeros((0, 8), dtype=np.uint32)
    f_idx_map = np.zeros(n_features, dtype=np.uint32)
    return np.column_stack([p[0].predict(X, no_cats, f_idx_map, 1) for p in model._predictors])


# --------------------------------------------------------------------------------------
# Linear
# --------------------------------------------------------------------------------------


def test_linear_contributions_are_exact_and_relative_to_the_mean() -> None:
    X, y = _data(n_features=5)
    X[:, 4] = np.nan  # an all-empty feature must not shift the coefficients
    pipe = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("model", LogisticRegression()),
        ]
    ).fit(X, y)
    reference = LinearExplainer.reference_from(pipe, X)
    explainer = LinearExplainer(pipe, reference)
    Xs, _ = _data(n=200, n_features=5, seed=1)
    exp = explainer.explain(Xs)

    np.testing.assert_allclose(exp.margin(), pipe.decision_function(Xs), atol=1e-10)
    z = pipe[:-1].transform(Xs)
    coef = pipe[-1].coef_.ravel()
    np.testing.assert_allclose(exp.values, coef * (z - reference))
    np.testing.assert_allclose(reference, 0.0, atol=1e-12)  # standardized training data
    # The baseline is the margin of the average (standardized) training customer.
    at_mean = pipe[-1].decision_function(reference[None, :])[0]
    assert exp.expected_value == pytest.approx(at_mean, abs=1e-12)
    assert np.all(exp.values[:, 4] == 0.0)


# --------------------------------------------------------------------------------------
# TreeSHAP
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"max_leaf_nodes": 15, "max_depth": 4},
        {"max_leaf_nodes": 31, "max_iter": 8},  # 30 internal nodes: sorted keys in _cells
        {"max_leaf_nodes": 3, "max_depth": 1, "max_iter": 5},
    ],
)
def test_tree_shap_local_accuracy_with_missing_values(params) -> None:
    X, y = _data()
    model = _hgb(X, y, **params)
    Xs, _ = _data(n=400, seed=7, nan_rate=0.3)
    exp = TreeShapExplainer(model).explain(Xs, batch_size=150)
    np.testing.assert_allclose(exp.margin(), model.decision_function(Xs), atol=1e-6)


def test_tree_shap_expected_value_is_mean_raw_margin_over_training_data() -> None:
    X, y = _data()
    model = _hgb(X, y)
    assert TreeShapExplainer(model).expected_value_ == pytest.approx(
        model.decision_function(X).mean(), abs=1e-9
    )


def test_tree_shap_missing_values_never_seen_in_training() -> None:
    X, y = _data(nan_rate=0.0)
    model = _hgb(X, y)
    Xs, _ = _data(n=300, seed=3, nan_rate=0.4)
    exp = TreeShapExplainer(model).explain(Xs)
    np.testing.assert_allclose(exp.margin(), model.decision_function(Xs), atol=1e-6)


def test_tree_shap_additive_model_matches_per_feature_shape_functions() -> None:
    """With one feature per tree, SHAP_j(x) = f_j(x_j) - E_train[f_j], computed by brute force."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(2000, 3))
    X[rng.random(X.shape) < 0.1] = np.nan
    Xf = np.nan_to_num(X)
    logit = np.sin(2 * Xf[:, 0]) + Xf[:, 1] ** 2 - 1 - 0.5 * Xf[:, 2]
    y = (rng.random(2000) < 1 / (1 + np.exp(-logit))).astype(int)
    model = _hgb(X, y, max_iter=30, interaction_cst=[[0], [1], [2]])

    Xs = rng.normal(size=(300, 3))
    Xs[rng.random(Xs.shape) < 0.2] = np.nan
    train_out, score_out = _tree_outputs(model, X), _tree_outputs(model, Xs)
    baseline = float(np.ravel(model._baseline_prediction)[0])
    np.testing.assert_allclose(score_out.sum(axis=1) + baseline, model.decision_function(Xs))

    features_of_tree = [
        set(p[0].nodes["feature_idx"][~p[0].nodes["is_leaf"].astype(bool)])
        for p in model._predictors
    ]
    assert all(len(f) <= 1 for f in features_of_tree)
    exp = TreeShapExplainer(model).explain(Xs)
    for j in range(3):
        trees = [t for t, f in enumerate(features_of_tree) if f == {j}]
        assert trees, f"no tree uses feature {j}"
        expected = score_out[:, trees].sum(axis=1) - train_out[:, trees].sum(axis=1).mean()
        np.testing.assert_allclose(exp.values[:, j], expected, atol=1e-9)


def _path_dependent_value(
    nodes: np.ndarray, x: np.ndarray, subset: set[int], node: int = 0
) -> float:
    """Algorithm 1 (EXPVALUE): E[f(x) | x_S] with branches weighted by training cover."""
    n = nodes[node]
    if n["is_leaf"]:
        return float(n["value"])
    left, right = int(n["left"]), int(n["right"])
    f = int(n["feature_idx"])
    if f in subset:
        xv = x[f]
        go_left = bool(n["missing_go_to_left"]) if np.isnan(xv) else xv <= n["num_threshold"]
        return _path_dependent_value(nodes, x, subset, left if go_left else right)
    cl, cr = float(nodes[left]["count"]), float(nodes[right]["count"])
    return (
        cl * _path_dependent_value(nodes, x, subset, left)
        + cr * _path_dependent_value(nodes, x, subset, right)
    ) / (cl + cr)


def _brute_force_shap(model: HistGradientBoostingClassifier, x: np.ndarray) -> np.ndarray:
    """Exact Shapley values by enumerating every subset of features."""
    m = x.size
    phi = np.zeros(m)
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        for i in range(m):
            others = [j for j in range(m) if j != i]
            for size in range(m):
                weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                for s in itertools.combinations(others, size):
                    with_i = _path_dependent_value(nodes, x, {*s, i})
                    without = _path_dependent_value(nodes, x, set(s))
                    phi[i] += weight * (with_i - without)
    return phi


def test_tree_shap_matches_brute_force_shapley_on_a_tiny_model() -> None:
    X, y = _data(n=800, n_features=3, seed=2)
    model = _hgb(X, y, max_iter=6, max_depth=3, max_leaf_nodes=8, min_samples_leaf=10)
    rows = np.array(
        [[0.3, -1.2, 0.5], [np.nan, 0.4, -0.7], [1.5, np.nan, np.nan], [-2.0, 2.0, 0.0]]
    )
    exp = TreeShapExplainer(model).explain(rows)
    for r, x in enumerate(rows):
        np.testing.assert_allclose(exp.values[r], _brute_force_shap(model, x), atol=1e-12)


def test_fast_path_agrees_with_literal_algorithm_2() -> None:
    X, y = _data(n=2500, seed=5)
    model = _hgb(X, y, max_iter=10, max_leaf_nodes=31, min_samples_leaf=5)  # deep paths
    explainer = TreeShapExplainer(model)
    Xs, _ = _data(n=300, seed=6, nan_rate=0.25)
    reference = np.zeros(Xs.shape)
    XT = np.ascontiguousarray(Xs.T)
    for tree in explainer.trees_:
        reference += _tree_shap_recursive(tree, tree.goes_left(XT).T, Xs.shape[1])
    assert max(t.width for t in explainer.trees_) >= 3  # repeated features were merged
    np.testing.assert_allclose(explainer.explain(Xs).values, reference, atol=1e-12)


def test_unused_feature_gets_exactly_zero() -> None:
    X, y = _data()
    X[:, 3] = 1.0  # constant: the model cannot split on it
    model = _hgb(X, y)
    Xs, _ = _data(n=200, seed=9)
    values = TreeShapExplainer(model).explain(Xs).values
    assert np.all(values[:, 3] == 0.0)
    assert np.all(np.abs(values[:, :3]).sum(axis=0) > 0)


def test_cells_groups_identical_direction_patterns_for_wide_trees() -> None:
    rng = np.random.default_rng(0)
    for n_nodes in (5, 25, 70):  # dense table, sorted keys, packed rows
        patterns = rng.random((n_nodes, 6)) < 0.5
        goes_left = patterns[:, rng.integers(0, 6, size=500)]
        cells, inverse = _cells(goes_left)
        assert cells.shape[0] == n_nodes and cells.shape[1] <= 6
        np.testing.assert_array_equal(cells[:, inverse], goes_left)


# --------------------------------------------------------------------------------------
# Factors
# --------------------------------------------------------------------------------------


def test_top_factors_orders_by_magnitude_stably_and_nulls_no_effect() -> None:
    values = np.array(
        [
            [0.1, -0.5, 0.5, 0.0],  # tie between 1 and 2 -> earlier feature first
            [0.0, 0.0, 0.2, 0.0],  # only one feature has an effect
        ]
    )
    np.testing.assert_array_equal(top_factors(values, 3), [[1, 2, 0], [2, -1, -1]])
    np.testing.assert_array_equal(top_factors(values[:, :2], 3), [[1, 0, -1], [-1, -1, -1]])


def test_importance_labels_use_absolute_log_odds_thresholds() -> None:
    labels = importance_labels(np.array([0.05, 0.2, 0.69, 0.7, 3.0]), high=0.7, medium=0.2)
    assert labels.tolist() == ["low", "medium", "medium", "high", "high"]
