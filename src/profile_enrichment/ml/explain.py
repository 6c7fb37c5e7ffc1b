"""Honest per-customer explanations in the model's raw margin (logit) space.

Both explainers return an :class:`Explanation`: ``values`` (one column per feature) and
``expected_value``, such that for every row
``values.sum(axis=1) + expected_value == model.decision_function(X)`` (local accuracy).

* :class:`LinearExplainer` gives the exact contributions of a logistic regression pipeline
  (imputer -> scaler -> logistic regression), relative to the average training customer:
  ``contribution_j = coef_j * (z_j - mean(z_j))``, where ``z`` is the imputed,
  standardized value.
* :class:`TreeShapExplainer` computes path-dependent TreeSHAP (Lundberg, Erion & Lee 2018,
  "Consistent Individualized Feature Attribution for Tree Ensembles", Algorithm 2) over the
  fitted trees of a scikit-learn :class:`~sklearn.ensemble.HistGradientBoostingClassifier`.
  The conditional expectations weight each branch by its training cover (the node
  ``count``), so the baseline is the expected raw margin over the training data. NaN is
  routed the way scikit-learn routes it (``missing_go_to_left``).

These explain the *uncalibrated* margin. Calibration is a monotone map applied afterwards,
so it changes neither the sign nor the order of a customer's factors.

How the TreeSHAP is computed, and why it is fast enough for millions of rows:

1. Two rows that go the same way at every internal node of a tree (the same "cell") get
   the same SHAP values for that tree. Each tree is therefore solved once per distinct cell
   in the batch, and the results are gathered back to the rows.
2. At a leaf, Algorithm 2's path state depends only on the set of unique path elements:
   EXTEND commutes, and UNWIND is its exact inverse. A feature that repeats on the path is
   merged into one element (zero fraction = product of its cover ratios, one fraction =
   whether ``x`` satisfies all its splits). This is what the recursion's UNWIND/re-EXTEND
   produces. So each leaf's unique path is built directly with EXTEND, and UNWOUND_SUM then
   gives every element's weight. The state depends on the row only through the leaf's
   one-fraction bit pattern, so the work is done once per distinct (leaf, pattern).
   Padding elements with zero = one = 1 are null players, which leave the other values
   unchanged. They let the leaves of a tree be processed together as one array.

:func:`_tree_shap_recursive` is a literal, row-vectorized transcription of Algorithm 2. The
tests use it as a second oracle beside brute-force Shapley enumeration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

__all__ = [
    "MIN_ABS_CONTRIBUTION",
    "Explanation",
    "LinearExplainer",
    "TreeShapExplainer",
    "importance_labels",
    "top_factors",
]

# A contribution smaller than this (in logit units) counts as "no effect". Such a feature is
# never reported as a factor, because any direction given for it would be noise.
MIN_ABS_CONTRIBUTION = 1e-9

# Above this many (leaf, pattern) keys, use np.unique instead of a dense lookup table.
_DENSE_KEY_LIMIT = 1 << 22


@dataclass(frozen=True)
class Explanation:
    """Per-row feature contributions in raw margin (logit) space.

    ``values[i].sum() + expected_value`` equals the model's raw margin for row ``i``.
    """

    values: np.ndarray
    expected_value: float

    def margin(self) -> np.ndarray:
        """The raw margin that the contributions imply (for checks)."""
        return self.values.sum(axis=1) + self.expected_value


# --------------------------------------------------------------------------------------
# Linear model: exact
# --------------------------------------------------------------------------------------


class LinearExplainer:
    """Exact contributions of ``Pipeline([...preprocessing..., LogisticRegression])``.

    ``reference`` is the mean of the preprocessed (imputed, standardized) training matrix.
    The margin is linear in ``z``, so ``coef * (z - reference)`` sums exactly to
    ``margin(x) - margin(reference)``. ``expected_value_`` is ``margin(reference)``, the
    margin of the average training customer.
    """

    def __init__(self, pipeline: Pipeline, reference: np.ndarray) -> None:
        self.pipeline = pipeline
        self.reference = np.asarray(reference, dtype=np.float64)
        lr = pipeline[-1]
        self.coef_ = np.asarray(lr.coef_, dtype=np.float64).ravel()
        if self.coef_.shape != self.reference.shape:
            raise ValueError(
                f"reference has {self.reference.size} values but the model has "
                f"{self.coef_.size} coefficients"
            )
        intercept = float(np.asarray(lr.intercept_).ravel()[0])
        self.expected_value_ = intercept + float(self.coef_ @ self.reference)

    @staticmethod
    def reference_from(pipeline: Pipeline, X_train: np.ndarray) -> np.ndarray:
        """Mean preprocessed value over the training rows (about 0 after scaling)."""
        return np.asarray(pipeline[:-1].transform(X_train), dtype=np.float64).mean(axis=0)

    def explain(self, X: np.ndarray) -> Explanation:
        """Contributions for each row of ``X`` (raw feature matrix, NaN allowed)."""
        z = np.asarray(self.pipeline[:-1].transform(X), dtype=np.float64)
        return Explanation(
            values=(z - self.reference) * self.coef_, expected_value=self.expected_value_
        )


# --------------------------------------------------------------------------------------
# Algorithm 2 primitives, vectorized over rows
# --------------------------------------------------------------------------------------


def _extend(weights: np.ndarray, zero: float | np.ndarray, one: np.ndarray) -> np.ndarray:
    """EXTEND: append an element with zero fraction ``zero`` and one fraction ``one``.

    ``weights`` is (rows, l), the path weights of the l existing elements. ``zero`` is a
    scalar or one value per row, and ``one`` is one value per row. Returns (rows, l + 1).
    """
    rows, length = weights.shape
    if length == 0:
        return np.ones((rows, 1))
    z = np.asarray(zero, dtype=np.float64).reshape(-1, 1)
    j = np.arange(length + 1)
    pad = np.zeros((rows, 1))
    padded_right = np.concatenate([weights, pad], axis=1)
    padded_left = np.concatenate([pad, weights], axis=1)
    return z * padded_right * ((length - j) / (length + 1)) + np.asarray(one).reshape(
        -1, 1
    ) * padded_left * (j / (length + 1))


def _unwind(weights: np.ndarray, zero: float, one: np.ndarray) -> np.ndarray:
    """UNWIND: remove an element (zero fraction ``zero``, one fraction ``one`` per row).

    Returns the (rows, l - 1) path weights. For a single input a one fraction is 0 or 1,
    so both branches of the paper's ``if o != 0`` are computed and one is picked per row.
    """
    depth = weights.shape[1] - 1  # index of the last element (the paper's unique_depth)
    is_one = one != 0
    one_safe = np.where(is_one, one, 1.0)
    out = weights[:, :depth].copy()
    next_one = weights[:, depth].copy()
    for i in range(depth - 1, -1, -1):
        if_one = next_one * (depth + 1) / ((i + 1) * one_safe)
        if_zero = weights[:, i] * (depth + 1) / (zero * (depth - i))
        new = np.where(is_one, if_one, if_zero)
        next_one = weights[:, i] - new * zero * (depth - i) / (depth + 1)
        out[:, i] = new
    return out


def _unwound_sums(weights: np.ndarray, zeros: np.ndarray, ones: np.ndarray) -> np.ndarray:
    """UNWOUND_PATH_SUM for several path elements at once.

    ``weights`` is (rows, depth + 1). ``zeros`` is (elements,) or (rows, elements), and
    ``ones`` is (rows, elements); they describe the elements to unwind. Returns
    (rows, elements): the total weight of each element's unwound path.
    """
    depth = weights.shape[1] - 1
    is_one = ones != 0
    one_safe = np.where(is_one, ones, 1.0)
    total = np.zeros(ones.shape, dtype=np.float64)
    next_one = np.broadcast_to(weights[:, depth : depth + 1], ones.shape)
    for i in range(depth - 1, -1, -1):
        w_i = weights[:, i : i + 1]
        if_one = next_one * (depth + 1) / ((i + 1) * one_safe)
        if_zero = w_i / zeros * ((depth + 1) / (depth - i))
        total = total + np.where(is_one, if_one, if_zero)
        next_one = w_i - if_one * zeros * ((depth - i) / (depth + 1))
    return total


# --------------------------------------------------------------------------------------
# Trees
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tree:
    """What TreeSHAP needs from one fitted ``TreePredictor``, as plain arrays.

    Node arrays are indexed by node id. The ``leaf_*``, ``slot_*`` and ``cond_*`` arrays
    describe, for each leaf, its unique path elements ("slots", padded to ``width``) and
    the splits ("conditions") that decide whether a row satisfies each slot.
    """

    feature: np.ndarray  # split feature per node
    threshold: np.ndarray  # go left iff x <= threshold
    missing_left: np.ndarray  # NaN goes left
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray  # leaf values (already scaled by the learning rate)
    left_ratio: np.ndarray  # cover(left) / (cover(left) + cover(right)) per internal node
    internal: np.ndarray  # internal node ids, in node order
    column: np.ndarray  # node id -> row of the goes-left matrix (-1 for leaves)
    expected_value: float  # cover-weighted mean leaf value
    used_features: np.ndarray
    width: int  # max number of unique features on a root-to-leaf path
    leaf_value: np.ndarray  # (leaves,)
    slot_feature: np.ndarray  # (leaves, width); padding = -1
    slot_zero: np.ndarray  # (leaves, width) merged zero fractions; padding = 1.0
    cond_column: np.ndarray  # (conditions,) goes-left row to test
    cond_left: np.ndarray  # (conditions,) the path goes left there
    real_slots: np.ndarray  # flat slot id (leaf * width + position) of each real slot
    slot_conds: tuple[
        tuple[np.ndarray, np.ndarray], ...
    ]  # per rank r: (real slots, their r-th condition)
    slot_onehot: np.ndarray  # (leaves * width, used features): slot -> feature; padding = 0

    @classmethod
    def from_nodes(cls, nodes: np.ndarray) -> _Tree:
        if nodes["is_categorical"].any():
            raise NotImplementedError("TreeSHAP here supports numeric splits only")
        is_leaf = nodes["is_leaf"].astype(bool)
        left = nodes["left"].astype(np.int64)
        right = nodes["right"].astype(np.int64)
        count = nodes["count"].astype(np.float64)
        feature = nodes["feature_idx"].astype(np.int64)
        value = nodes["value"].astype(np.float64)
        internal = np.flatnonzero(~is_leaf)
        left_ratio = np.ones(len(nodes))
        # Normalized over the two children, so each split's weights always sum to 1.
        left_ratio[internal] = count[left[internal]] / (
            count[left[internal]] + count[right[internal]]
        )
        column = np.full(len(nodes), -1, dtype=np.int64)
        column[internal] = np.arange(internal.size)

        # Walk every root-to-leaf path: (leaf, [(node, went_left), ...]).
        paths: list[tuple[int, list[tuple[int, bool]]]] = []
        stack: list[tuple[int, list[tuple[int, bool]]]] = [(0, [])]
        while stack:
            node, path = stack.pop()
            if is_leaf[node]:
                paths.append((node, path))
            else:
                stack.append((int(right[node]), [*path, (node, False)]))
                stack.append((int(left[node]), [*path, (node, True)]))
        paths.sort(key=lambda p: p[0])

        per_leaf: list[tuple[list[int], list[float], list[list[tuple[int, bool]]]]] = []
        for _, path in paths:
            feats: list[int] = []
            zeros: list[float] = []
            conds: list[list[tuple[int, bool]]] = []
            for node, went_left in path:
                f = int(feature[node])
                ratio = left_ratio[node] if went_left else 1.0 - left_ratio[node]
                if f not in feats:
                    feats.append(f)
                    zeros.append(1.0)
                    conds.append([])
                k = feats.index(f)
                zeros[k] *= ratio
                conds[k].append((int(column[node]), went_left))
            per_leaf.append((feats, zeros, conds))

        n_leaves = len(per_leaf)
        width = max((len(f) for f, _, _ in per_leaf), default=0)
        slot_feature = np.full((n_leaves, width), -1, dtype=np.int64)
        slot_zero = np.ones((n_leaves, width))
        cond_column: list[int] = []
        cond_left: list[bool] = []
        conds_of_slot: list[list[int]] = []
        real_slots: list[int] = []
        for leaf, (feats, zeros, conds) in enumerate(per_leaf):
            for k, (f, z, slot_conds) in enumerate(zip(feats, zeros, conds, strict=True)):
                slot_feature[leaf, k] = f
                slot_zero[leaf, k] = z
                real_slots.append(leaf * width + k)
                conds_of_slot.append([])
                for col, went_left in slot_conds:
                    conds_of_slot[-1].append(len(cond_column))
                    cond_column.append(col)
                    cond_left.append(went_left)
        # Condition r of every slot that has more than r conditions, for an AND by rank.
        max_conds = max((len(c) for c in conds_of_slot), default=0)
        by_rank = tuple(
            (
                np.array([i for i, c in enumerate(conds_of_slot) if len(c) > r], dtype=np.int64),
                np.array([c[r] for c in conds_of_slot if len(c) > r], dtype=np.int64),
            )
            for r in range(max_conds)
        )

        leaves = np.array([p[0] for p in paths], dtype=np.int64)
        leaf_weight = np.array([np.prod(zs) for _, zs, _ in per_leaf])
        used_features = np.unique(feature[internal])
        flat = slot_feature.ravel()
        slot_onehot = np.zeros((flat.size, used_features.size))
        real = flat >= 0
        slot_onehot[np.flatnonzero(real), np.searchsorted(used_features, flat[real])] = 1.0
        return cls(
            feature=feature,
            threshold=nodes["num_threshold"].astype(np.float64),
            missing_left=nodes["missing_go_to_left"].astype(bool),
            left=left,
            right=right,
            is_leaf=is_leaf,
            value=value,
            left_ratio=left_ratio,
            internal=internal,
            column=column,
            expected_value=float(leaf_weight @ value[leaves]),
            used_features=used_features,
            width=width,
            leaf_value=value[leaves],
            slot_feature=slot_feature,
            slot_zero=slot_zero,
            cond_column=np.array(cond_column, dtype=np.int64),
            cond_left=np.array(cond_left, dtype=bool),
            real_slots=np.array(real_slots, dtype=np.int64),
            slot_conds=by_rank,
            slot_onehot=slot_onehot,
        )

    def goes_left(self, XT: np.ndarray, nanT: np.ndarray | None = None) -> np.ndarray:
        """Boolean matrix (internal nodes x rows): does the row go left at that node?

        ``XT`` is the *transposed* input (features x rows), so each node reads one
        contiguous row. Mirrors scikit-learn's raw-data predictor: NaN follows
        ``missing_go_to_left``, otherwise ``x <= threshold`` goes left.
        """
        out = np.empty((self.internal.size, XT.shape[1]), dtype=bool)
        for j, node in enumerate(self.internal):
            np.less_equal(XT[self.feature[node]], self.threshold[node], out=out[j])  # NaN: False
        if nanT is None:
            nanT = np.isnan(XT)
        nan_left = np.flatnonzero(self.missing_left[self.internal])
        if nan_left.size:
            out[nan_left] |= nanT[self.feature[self.internal[nan_left]]]
        return out

    def shap_cells(self, cells_t: np.ndarray) -> np.ndarray:
        """SHAP values (cells x used_features) for rows given by their goes-left pattern.

        ``cells_t`` is (internal nodes x cells) boolean. See the module docstring, point 2.
        """
        n_cells = cells_t.shape[1]
        n_leaves, width = self.slot_feature.shape
        # One fraction of every (leaf, slot, cell): are all of the slot's splits satisfied?
        satisfied = cells_t[self.cond_column] == self.cond_left[:, None]
        real = satisfied[self.slot_conds[0][1]]
        for slots, conds in self.slot_conds[1:]:
            real[slots] &= satisfied[conds]
        ones = np.ones((n_leaves * width, n_cells), dtype=bool)
        ones[self.real_slots] = real
        ones = ones.reshape(n_leaves, width, n_cells)
        keys = np.repeat(np.arange(n_leaves, dtype=np.int64)[:, None] << width, n_cells, axis=1)
        for k in range(width):  # (leaves, cells): leaf id, then the pattern bits
            keys |= ones[:, k, :].astype(np.int64) << k
        if n_leaves << width <= _DENSE_KEY_LIMIT:
            present = np.zeros(n_leaves << width, dtype=bool)
            present[keys] = True
            uniq = np.flatnonzero(present)
            lookup = np.zeros(n_leaves << width, dtype=np.int64)
            lookup[uniq] = np.arange(uniq.size)
            inverse = lookup[keys]
        else:
            uniq, inverse = np.unique(keys, return_inverse=True)
            inverse = inverse.reshape(keys.shape)
        # Solve each distinct (leaf, pattern) once: EXTEND its unique path, then unwind.
        leaf = uniq >> width
        one = ((uniq[:, None] >> np.arange(width)) & 1).astype(np.float64)
        zero = self.slot_zero[leaf]
        weights = _extend(np.zeros((uniq.size, 0)), 1.0, np.ones(uniq.size))  # root dummy
        for k in range(width):
            weights = _extend(weights, zero[:, k], one[:, k])
        contrib = _unwound_sums(weights, zero, one) * (one - zero) * self.leaf_value[leaf, None]
        # Add each cell's (leaf, slot) contributions into the slot's feature.
        per_slot = contrib[inverse.T].reshape(n_cells, n_leaves * width)
        return per_slot @ self.slot_onehot


def _tree_shap_recursive(tree: _Tree, goes_left: np.ndarray, n_features: int) -> np.ndarray:
    """Algorithm 2 (RECURSE) as written in the paper, vectorized over rows.

    ``goes_left`` is (rows x internal nodes). Returns (rows x n_features). This is the
    readable reference. :meth:`_Tree.shap_cells` is the fast path, and the tests check
    that the two agree.
    """
    rows = goes_left.shape[0]
    phi = np.zeros((rows, n_features))
    if tree.is_leaf[0]:
        return phi

    def recurse(
        node: int,
        feats: list[int],
        zeros: list[float],
        ones: list[np.ndarray],
        weights: np.ndarray,
        zero: float,
        one: np.ndarray,
        feature: int,
    ) -> None:
        weights = _extend(weights, zero, one)
        feats, zeros, ones = [*feats, feature], [*zeros, zero], [*ones, one]
        if tree.is_leaf[node]:
            # element 0 is the root's dummy element (feature -1): it gets no credit
            z = np.asarray(zeros[1:])
            o = np.stack(ones[1:], axis=1)
            phi[:, feats[1:]] += _unwound_sums(weights, z, o) * (o - z) * tree.value[node]
            return
        split = int(tree.feature[node])
        incoming_zero, incoming_one = 1.0, np.ones(rows)
        if split in feats:  # split on this feature before: undo it so it counts once
            k = feats.index(split)
            incoming_zero, incoming_one = zeros[k], ones[k]
            weights = _unwind(weights, zeros[k], ones[k])
            feats, zeros, ones = (
                feats[:k] + feats[k + 1 :],
                zeros[:k] + zeros[k + 1 :],
                ones[:k] + ones[k + 1 :],
            )
        went_left = goes_left[:, tree.column[node]]
        ratio = float(tree.left_ratio[node])
        args = (feats, zeros, ones, weights)
        recurse(int(tree.left[node]), *args, incoming_zero * ratio, incoming_one * went_left, split)
        recurse(
            int(tree.right[node]),
            *args,
            incoming_zero * (1.0 - ratio),
            incoming_one * ~went_left,
            split,
        )

    recurse(0, [], [], [], np.zeros((rows, 0)), 1.0, np.ones(rows), -1)
    return phi


def _cells(goes_left_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct columns of a (nodes x rows) boolean matrix.

    Returns the distinct patterns as a (nodes x cells) boolean matrix and, for each row,
    the index of its cell. Patterns are packed into integer keys. Up to 20 nodes, a dense
    lookup table replaces the sort.
    """
    n_nodes, n_rows = goes_left_t.shape
    if n_nodes > 64:
        packed = np.packbits(goes_left_t.T, axis=1, bitorder="little")
        uniq_packed, inverse = np.unique(packed, axis=0, return_inverse=True)
        bits = np.unpackbits(uniq_packed, axis=1, bitorder="little", count=n_nodes)
        return np.ascontiguousarray(bits.T).astype(bool), inverse.ravel()
    key_type = np.uint32 if n_nodes <= 32 else np.uint64
    keys = np.zeros(n_rows, dtype=key_type)
    for j in range(n_nodes):
        keys |= goes_left_t[j].astype(key_type) << key_type(j)
    keys = keys.astype(np.uint64)
    if n_nodes <= 20:
        present = np.zeros(1 << n_nodes, dtype=bool)
        present[keys] = True
        uniq = np.flatnonzero(present).astype(np.uint64)
        lookup = np.zeros(1 << n_nodes, dtype=np.int64)
        lookup[uniq] = np.arange(uniq.size)
        inverse = lookup[keys]
    else:
        uniq, inverse = np.unique(keys, return_inverse=True)
    bits = (uniq[None, :] >> np.arange(n_nodes, dtype=np.uint64)[:, None]) & np.uint64(1)
    return bits.astype(bool), inverse.ravel()


class TreeShapExplainer:
    """Path-dependent TreeSHAP for a fitted binary ``HistGradientBoostingClassifier``.

    ``explain(X)`` returns exact SHAP values in raw margin (log-odds) space; nothing is
    sampled. ``expected_value_`` is the model's baseline plus, per tree, the cover-weighted
    mean leaf value, i.e. the expected raw margin over the training data. Local accuracy
    holds to floating-point precision.
    """

    def __init__(self, model: HistGradientBoostingClassifier) -> None:
        if len(getattr(model, "classes_", [])) != 2:
            raise ValueError("TreeShapExplainer supports fitted binary classifiers only")
        self.model = model
        self.n_features_ = int(model.n_features_in_)
        self.trees_ = [_Tree.from_nodes(iteration[0].nodes) for iteration in model._predictors]
        baseline = float(np.asarray(model._baseline_prediction).ravel()[0])
        self.expected_value_ = baseline + sum(t.expected_value for t in self.trees_)

    def explain(self, X: np.ndarray, batch_size: int = 250_000) -> Explanation:
        """SHAP values for each row of ``X`` (raw feature matrix, NaN allowed)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_:
            raise ValueError(f"expected a 2-D array with {self.n_features_} columns")
        values = np.empty(X.shape, dtype=np.float64)
        for start in range(0, X.shape[0], batch_size):
            stop = min(start + batch_size, X.shape[0])
            values[start:stop] = self._explain_batch(X[start:stop])
        return Explanation(values=values, expected_value=self.expected_value_)

    def _explain_batch(self, X: np.ndarray) -> np.ndarray:
        XT = np.ascontiguousarray(X.T)
        nanT = np.isnan(XT)
        values_t = np.zeros(XT.shape, dtype=np.float64)  # features x rows: contiguous rows
        for tree in self.trees_:
            if tree.is_leaf[0]:
                continue
            cells, inverse = _cells(tree.goes_left(XT, nanT))
            cell_phi_t = np.ascontiguousarray(tree.shap_cells(cells).T)
            for k, f in enumerate(tree.used_features):
                values_t[f] += cell_phi_t[k][inverse]
        return values_t.T


# --------------------------------------------------------------------------------------
# From contributions to reported factors
# --------------------------------------------------------------------------------------


def importance_labels(abs_values: np.ndarray, high: float, medium: float) -> np.ndarray:
    """'high' if |contribution| >= high, 'medium' if >= medium, else 'low' (logit units)."""
    return np.where(abs_values >= high, "high", np.where(abs_values >= medium, "medium", "low"))


def top_factors(values: np.ndarray, k: int) -> np.ndarray:
    """Feature indices of the ``k`` largest |contributions| per row; -1 marks "none".

    Ties go to the earlier feature (stable sort). A slot is -1 when there are fewer than
    ``k`` features, or when its contribution is below :data:`MIN_ABS_CONTRIBUTION`: a
    feature with no effect has no honest direction.
    """
    n_rows, n_features = values.shape
    idx = np.full((n_rows, k), -1, dtype=np.int64)
    take = min(k, n_features)
    if take == 0 or n_rows == 0:
        return idx
    abs_values = np.abs(values)
    order = np.argsort(-abs_values, axis=1, kind="stable")[:, :take]
    keep = np.take_along_axis(abs_values, order, axis=1) >= MIN_ABS_CONTRIBUTION
    idx[:, :take] = np.where(keep, order, -1)
    return idx
