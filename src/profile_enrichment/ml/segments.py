"""Customer segments: k-means on standardized behaviour features, readable names, stable ids.

Pipeline (all deterministic for a fixed ``random_state``):

1. **Impute.** Missing / non-finite values are replaced by the training median of the column
   (0 when the column is entirely missing). Upstream SQL should already ``coalesce`` values
   whose absence has a meaning (e.g. "never ordered"); the median is only a safety net.
2. **log1p.** With ``log_features="auto"`` every feature that is non-negative in training and
   right-skewed (sample skewness > 1) is log1p-transformed. Money, counts and day spans are
   heavy-tailed: without the log a handful of whales would get clusters of their own and
   everyone else would be squeezed into one. At scoring time these features are clipped at 0
   before the log. Pass an explicit list (or ``None``) to override the automatic choice.
3. **Standardize.** Centre by the training mean, divide by the population standard deviation.
   Constant columns get scale 1 (they then contribute nothing); all-constant input is an error.
4. **Choose k.** For every k in ``[k_min, k_max]`` k-means is fitted on a deterministic random
   sample of at most ``sample_size`` rows; the silhouette is computed on a deterministic
   sub-sample of that of at most ``silhouette_sample_size`` rows (the silhouette is O(n^2): 13 s
   per k at 20,000 rows on one busy core vs. <1 s at 5,000, with a standard error well below
   the gaps between k). The best silhouette wins (ties go to the smaller k). The final model
   is fitted on all rows, initialised from the sample solution.
5. **Stable ids.** Without a previous run, ids are 1..k by descending segment size. With
   ``previous_centroids``, new centroids are matched to the previous ones by the Hungarian
   algorithm on Euclidean distance in the *current* standardized space; matched segments keep
   the old id, unmatched ones get ``max(previous ids) + 1, ...`` (by descending size).
6. **Names.** See :func:`name_segments`: rule-based, on the z-scores of the centroids per
   feature role (recency, frequency, monetary, engagement, tenure), using only the roles that
   are present.

Persistence is plain JSON via :meth:`SegmentModel.to_dict` / :meth:`SegmentModel.from_dict`;
``predict`` needs nothing but those parameters (nearest standardized centroid).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from scipy.stats import skew
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from profile_enrichment.errors import ModelFitError, UserError

ROLES: tuple[str, ...] = ("recency", "frequency", "monetary", "engagement", "tenure")
"""Roles the naming rules understand. Recency = days since last activity (high = lapsed)."""

NAME_Z_THRESHOLD = 0.5
"""A role is "high" for a segment when its centroid z-score is above this, "low" below minus it."""

FORMAT_VERSION = 1

# Name-based role inference, tried in order (first match wins), on the lower-cased feature name.
# Order matters: "days_since_last_order" is recency, not frequency; "avg_order_value" is monetary.
# Names matching _NO_ROLE get no inferred role: scores/ranks have no agreed direction (an RFM
# recency_score is high for *recent* customers), trends are differences rather than levels,
# and bounce-type measures are negative engagement. Override them explicitly if wanted.
_NO_ROLE = re.compile(r"^(is|has)_|score|rank|trend|bounce|ratio|share|_pct|percent")
_ROLE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("recency", re.compile(r"^recency(_days)?$|since_last|days_inactive|inactive_days")),
    ("tenure", re.compile(r"tenure|since_first|first_seen|account_age|customer_age|age_days")),
    ("monetary", re.compile(r"monetary|revenue|spend|amount|sales|value|ltv|clv|aov|gmv|margin")),
    ("frequency", re.compile(r"frequency|order|purchase|transaction|txn")),
    (
        "engagement",
        re.compile(
            r"engage|session|view|visit|click|event|open|dwell|time_on|active_days|cart|checkout"
        ),
    ),
)

# Naming rules, first match wins: (name, required conditions, optional conditions).
# A rule applies only when every *required* role is among the features; *optional* conditions
# are checked only when their role is present. So with fewer features the rules degrade to the
# more generic names further down rather than guessing.
# Ops: "high" z > t, "low" z < -t, "not_high" z <= t, "not_low" z >= -t (t = NAME_Z_THRESHOLD).
# Recency is days since last activity, so "high" = stale. A high spender is only "loyal" when
# clearly more recent than average; any other high spender counts as "at risk" (the average
# recency is dragged up by the many lapsed customers, so "not clearly recent" is the signal).
# Likewise one-timers are usually the majority, so their frequency z is near 0: "not high".
_Condition = tuple[str, str]
_NAME_RULES: tuple[tuple[str, tuple[_Condition, ...], tuple[_Condition, ...]], ...] = (
    ("High-value loyal", (("monetary", "high"), ("frequency", "high")), (("recency", "low"),)),
    ("At-risk big spenders", (("monetary", "high"), ("recency", "not_low")), ()),
    ("Lapsed one-timers", (("recency", "high"), ("frequency", "not_high")), ()),
    (
        "New browsers",
        (("tenure", "low"),),
        (("monetary", "not_high"), ("frequency", "not_high")),
    ),
    (
        "Engaged browsers",
        (("engagement", "high"),),
        (("monetary", "not_high"), ("frequency", "not_high")),
    ),
    ("Big spenders", (("monetary", "high"),), ()),
    ("Frequent buyers", (("frequency", "high"),), ()),
    ("Lapsed customers", (("recency", "high"),), ()),
    ("Recently active", (("recency", "low"),), ()),
    ("Long-standing customers", (("tenure", "high"),), ()),
    ("Low spenders", (("monetary", "low"),), ()),
    ("Infrequent buyers", (("frequency", "low"),), ()),
    ("Disengaged", (("engagement", "low"),), ()),
)
_FALLBACK_NAME = "Mainstream"


# --------------------------------------------------------------------------------------------
# Small pure functions (pinned by tests)
# --------------------------------------------------------------------------------------------


def infer_feature_roles(
    feature_cols: Sequence[str], overrides: Mapping[str, str | None] | None = None
) -> dict[str, str | None]:
    """Map each feature to a role in :data:`ROLES` (or ``None``) from its name.

    ``overrides`` wins over the name patterns (use it to pass roles from dbt column ``meta``;
    ``None`` excludes a feature from naming). A leading ``-`` marks a feature that grows the
    other way, e.g. ``{"recency_score": "-recency"}`` for a score that is high when recent.
    Booleans (``is_*``, ``has_*``), scores, ranks, trends and ratios get no inferred role.
    """
    overrides = dict(overrides or {})
    roles: dict[str, str | None] = {}
    for col in feature_cols:
        if col in overrides:
            role = overrides[col]
            if role is not None and role.removeprefix("-") not in ROLES:
                raise UserError(
                    f"unknown segment role {role!r} for feature {col!r}",
                    hint=f"use one of {', '.join(ROLES)} (optionally prefixed by '-') or null",
                )
            roles[col] = role
            continue
        name = col.lower()
        roles[col] = None
        if _NO_ROLE.search(name):
            continue
        for role, pattern in _ROLE_PATTERNS:
            if pattern.search(name):
                roles[col] = role
                break
    return roles


def _condition_holds(z: float, op: str, threshold: float) -> bool:
    if op == "high":
        return z > threshold
    if op == "low":
        return z < -threshold
    if op == "not_high":
        return z <= threshold
    if op == "not_low":
        return z >= -threshold
    raise ValueError(f"unknown condition {op!r}")


def name_segments(
    z: pd.DataFrame,
    roles: Mapping[str, str | None],
    threshold: float = NAME_Z_THRESHOLD,
) -> dict[int, str]:
    """Give each segment (row of ``z``) a unique readable name.

    ``z`` holds the standardized centroids (index = segment id, columns = features), i.e. how
    many population standard deviations each segment sits from the average customer. A role's
    score is the mean z of its features (sign-flipped for ``-role``); the first rule of
    ``_NAME_RULES`` that holds wins, otherwise "Mainstream". Duplicate names get a qualifier
    naming the feature that separates them most, e.g. "Mainstream (higher sessions 30d)"; if
    that still collides, "#<id>".
    """
    role_cols: dict[str, list[tuple[str, float]]] = {}
    for col in z.columns:
        role = roles.get(col)
        if role is not None:
            sign = -1.0 if role.startswith("-") else 1.0
            role_cols.setdefault(role.removeprefix("-"), []).append((col, sign))

    names: dict[int, str] = {}
    for seg_id, row in z.iterrows():
        scores = {
            role: float(np.mean([sign * row[col] for col, sign in cols]))
            for role, cols in role_cols.items()
        }
        chosen = _FALLBACK_NAME
        for name, required, optional in _NAME_RULES:
            if any(role not in scores for role, _ in required):
                continue
            conditions = list(required) + [c for c in optional if c[0] in scores]
            if all(_condition_holds(scores[role], op, threshold) for role, op in conditions):
                chosen = name
                break
        names[int(seg_id)] = chosen

    # Disambiguate duplicates deterministically.
    by_name: dict[str, list[int]] = {}
    for seg_id, name in names.items():
        by_name.setdefault(name, []).append(seg_id)
    for name, ids in by_name.items():
        if len(ids) < 2:
            continue
        group = z.loc[ids]
        deviation = group - group.mean(axis=0)
        for seg_id in ids:
            dev = deviation.loc[seg_id]
            if dev.abs().max() <= 0:
                continue
            col = str(dev.abs().idxmax())
            direction = "higher" if dev[col] > 0 else "lower"
            names[seg_id] = f"{name} ({direction} {col.replace('_', ' ')})"
    seen: dict[str, int] = {}
    for seg_id in sorted(names):
        seen[names[seg_id]] = seen.get(names[seg_id], 0) + 1
    for seg_id in sorted(names):
        if seen[names[seg_id]] > 1:
            names[seg_id] = f"{names[seg_id]} #{seg_id}"
    return names


def match_segment_ids(
    new_centers: np.ndarray,
    previous_centers: np.ndarray,
    previous_ids: Sequence[int],
    sizes: Sequence[int],
    max_distance: float | None = None,
) -> list[int]:
    """Ids for ``new_centers`` that keep ``previous_ids`` where segments correspond.

    Minimum-cost one-to-one matching (Hungarian, ``scipy.optimize.linear_sum_assignment``) on
    Euclidean distance; both centre arrays must be in the same standardized space. Pairs
    further apart than ``max_distance`` are not matched. Unmatched new segments get
    ``max(previous_ids) + 1, ...`` in order of descending size (ties by position). Ids of
    previous segments that found no partner are not reused in this run.
    """
    k = len(new_centers)
    ids: list[int | None] = [None] * k
    next_id = max(previous_ids, default=0) + 1
    if len(previous_centers):
        cost = cdist(new_centers, previous_centers)
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols, strict=True):
            if max_distance is None or cost[r, c] <= max_distance:
                ids[r] = int(previous_ids[c])
    for r in sorted(range(k), key=lambda i: (-int(sizes[i]), i)):
        if ids[r] is None:
            ids[r] = next_id
            next_id += 1
    return [int(i) for i in ids if i is not None]


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class SegmentModel:
    """K-means customer segments with readable names and ids that are stable across refreshes.

    ``n_threads`` caps the OpenMP/BLAS threads used while fitting (default 1, ``None`` = no
    cap): on shared cores, and when dbt runs several Python models in threads, multi-threaded
    k-means oversubscribes and spin-waits (measured 30x slower on 2 busy cores); one thread
    also makes results independent of the machine's core count.

    Parameters follow the scikit-learn style; fitted attributes end in ``_``:
    ``feature_cols_``, ``feature_roles_``, ``log_features_``, ``impute_values_``, ``center_``,
    ``scale_`` (the scaler params, all ``pd.Series`` indexed by feature), ``k_``,
    ``silhouette_by_k_`` (``{k: silhouette}``), ``centroids_`` (original units, index
    ``segment_id``), ``centroids_standardized_``, ``segment_names_``, ``segment_sizes_``,
    ``n_train_``.
    """

    def __init__(
        self,
        k_min: int = 3,
        k_max: int = 8,
        sample_size: int = 20000,
        random_state: int = 42,
        *,
        silhouette_sample_size: int = 5000,
        n_init: int = 10,
        n_threads: int | None = 1,
        log_features: Sequence[str] | Literal["auto"] | None = "auto",
        feature_roles: Mapping[str, str | None] | None = None,
        max_match_distance: float | None = None,
        id_col: str = "customer_id",
    ) -> None:
        self.k_min = k_min
        self.k_max = k_max
        self.sample_size = sample_size
        self.silhouette_sample_size = silhouette_sample_size
        self.random_state = random_state
        self.n_init = n_init
        self.n_threads = n_threads
        self.log_features = log_features
        self.feature_roles = feature_roles
        self.max_match_distance = max_match_distance
        self.id_col = id_col

    # -- fitting ---------------------------------------------------------------------------

    def fit(
        self,
        frame: pd.DataFrame,
        feature_cols: Sequence[str],
        previous_centroids: pd.DataFrame | None = None,
    ) -> SegmentModel:
        """Fit segments on ``frame[feature_cols]``; keep ids of ``previous_centroids`` (the
        previous run's ``centroids_``) where segments correspond. Raises ``ModelFitError`` on
        degenerate input (too few rows / distinct rows, all-constant features)."""
        if not 2 <= self.k_min <= self.k_max:
            raise UserError(
                f"segments: need 2 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}"
            )
        cols = _check_features(frame, feature_cols)
        if hasattr(self, "centroids_"):  # a failed refit must not leave a half-updated model
            del self.centroids_
        raw = _numeric_matrix(frame, cols)
        n = raw.shape[0]
        if n < self.k_min:
            raise ModelFitError(
                f"segments: {n} rows to fit, fewer than k_min={self.k_min}; "
                "need at least k_min customers (is the feature table empty?)"
            )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column medians
            medians = np.nanmedian(raw, axis=0)
        impute = np.where(np.isfinite(medians), medians, 0.0)
        filled = np.where(np.isnan(raw), impute, raw)

        log_mask = self._choose_log_mask(filled, cols)
        logged = filled.copy()
        logged[:, log_mask] = np.log1p(np.clip(logged[:, log_mask], 0.0, None))
        center = logged.mean(axis=0)
        scale = logged.std(axis=0)
        constant = ~(scale > 1e-12 * np.maximum(1.0, np.abs(center)))
        if constant.all():
            raise ModelFitError(
                f"segments: all {len(cols)} features are constant over {n} rows "
                f"({', '.join(cols)}); there is nothing to segment on"
            )
        scale = np.where(constant, 1.0, scale)

        self.feature_cols_ = list(cols)
        self.feature_roles_ = infer_feature_roles(cols, self.feature_roles)
        self.log_features_ = [c for c, m in zip(cols, log_mask, strict=True) if m]
        self.impute_values_ = pd.Series(impute, index=cols, dtype="float64")
        self.center_ = pd.Series(center, index=cols, dtype="float64")
        self.scale_ = pd.Series(scale, index=cols, dtype="float64")
        self.constant_features_ = [c for c, m in zip(cols, constant, strict=True) if m]
        self.n_train_ = int(n)

        z = self._standardize(raw)
        with threadpool_limits(limits=self.n_threads):
            centers, labels = self._select_and_fit(z)
        k = centers.shape[0]
        sizes = np.bincount(labels, minlength=k)

        if previous_centroids is not None and len(previous_centroids):
            prev_ids, prev_z, common = self._previous_in_current_space(previous_centroids)
            idx = [cols.index(c) for c in common]
            ids = match_segment_ids(
                centers[:, idx], prev_z, prev_ids, sizes, self.max_match_distance
            )
        else:
            ids = match_segment_ids(centers, np.empty((0, k)), [], sizes)

        order = np.argsort(ids, kind="stable")
        seg_ids = pd.Index([ids[i] for i in order], name="segment_id", dtype="int64")
        centers = centers[order]
        self.k_ = int(k)
        self.centroids_standardized_ = pd.DataFrame(centers, index=seg_ids, columns=cols)
        self.centroids_ = pd.DataFrame(self._inverse(centers), index=seg_ids, columns=cols)
        self.segment_sizes_ = {int(s): int(sizes[i]) for s, i in zip(seg_ids, order, strict=True)}
        self.segment_names_ = name_segments(self.centroids_standardized_, self.feature_roles_)
        return self

    def _choose_log_mask(self, filled: np.ndarray, cols: list[str]) -> np.ndarray:
        if self.log_features is None:
            return np.zeros(len(cols), dtype=bool)
        if isinstance(self.log_features, str):
            if self.log_features != "auto":
                raise UserError(
                    f"segments: log_features must be 'auto', a list of features or None, "
                    f"got {self.log_features!r}"
                )
            mask = np.zeros(len(cols), dtype=bool)
            for j in range(len(cols)):
                col = filled[:, j]
                if col.min() < 0 or np.ptp(col) == 0:
                    continue
                mask[j] = float(skew(col)) > 1.0
            return mask
        unknown = sorted(set(self.log_features) - set(cols))
        if unknown:
            raise UserError(f"segments: log_features not among the features: {unknown}")
        return np.array([c in set(self.log_features) for c in cols], dtype=bool)

    def _select_and_fit(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pick k by silhouette on a deterministic sample, then fit on all rows."""
        n = z.shape[0]
        rng = np.random.default_rng(self.random_state)
        sample = z
        if n > self.sample_size:
            sample = z[np.sort(rng.choice(n, size=self.sample_size, replace=False))]
        m = sample.shape[0]
        sil_rows = np.arange(m)
        if m > self.silhouette_sample_size:
            sil_rows = np.sort(rng.choice(m, size=self.silhouette_sample_size, replace=False))
        n_distinct = len(np.unique(sample, axis=0))
        k_hi = min(self.k_max, n_distinct, sample.shape[0] - 1)
        if k_hi < self.k_min:
            raise ModelFitError(
                f"segments: only {n_distinct} distinct customers (of {n}) in the fitting sample, "
                f"too few for k_min={self.k_min} segments"
            )
        self.silhouette_by_k_: dict[int, float] = {}
        best: tuple[float, int, KMeans] | None = None
        for k in range(self.k_min, k_hi + 1):
            km = _kmeans(k, self.n_init, self.random_state).fit(sample)
            labels = km.labels_[sil_rows]
            if not 2 <= len(np.unique(labels)) <= len(sil_rows) - 1:
                continue
            score = float(silhouette_score(sample[sil_rows], labels))
            self.silhouette_by_k_[k] = score
            if best is None or score > best[0] + 1e-12:
                best = (score, k, km)
        if best is None:
            raise ModelFitError("segments: k-means found fewer than 2 clusters for every k")
        _, k, km = best
        if sample is not z:
            init = km.cluster_centers_
            km = KMeans(n_clusters=k, init=init, n_init=1, random_state=self.random_state)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                km.fit(z)
        centers = np.asarray(km.cluster_centers_, dtype="float64")
        return centers, _nearest(z, centers)

    def _previous_in_current_space(
        self, previous: pd.DataFrame
    ) -> tuple[list[int], np.ndarray, list[str]]:
        try:
            prev_ids = [int(i) for i in previous.index]
        except (TypeError, ValueError) as exc:
            raise UserError(
                "segments: previous_centroids must be indexed by integer segment_id",
                hint="pass the previous model's centroids_ (or from_dict(...).centroids_)",
            ) from exc
        if len(set(prev_ids)) != len(prev_ids):
            raise UserError("segments: previous_centroids has duplicate segment ids")
        common = [c for c in self.feature_cols_ if c in previous.columns]
        if not common:
            return prev_ids, np.empty((0, 0)), []
        full = pd.DataFrame(
            {c: previous[c] if c in common else np.nan for c in self.feature_cols_},
            index=previous.index,
        )
        prev_z = self._standardize(_numeric_matrix(full, self.feature_cols_))
        idx = [self.feature_cols_.index(c) for c in common]
        return prev_ids, prev_z[:, idx], common

    # -- transforms ------------------------------------------------------------------------

    def _standardize(self, raw: np.ndarray) -> np.ndarray:
        impute = self.impute_values_.to_numpy()
        x = np.where(np.isnan(raw), impute, raw)
        mask = self.impute_values_.index.isin(self.log_features_)
        x[:, mask] = np.log1p(np.clip(x[:, mask], 0.0, None))
        return (x - self.center_.to_numpy()) / self.scale_.to_numpy()

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        x = z * self.scale_.to_numpy() + self.center_.to_numpy()
        mask = self.center_.index.isin(self.log_features_)
        x[:, mask] = np.expm1(x[:, mask])
        return x

    # -- scoring ---------------------------------------------------------------------------

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Assign each row to its nearest segment: ``DataFrame(<id_col>, segment_id,
        segment_name)`` in input row order."""
        self._check_fitted()
        if self.id_col not in frame.columns:
            raise UserError(
                f"segments: the frame to score has no {self.id_col!r} column",
                hint="select the customer id along with the features",
            )
        cols = _check_features(frame, self.feature_cols_)
        z = self._standardize(_numeric_matrix(frame, cols))
        centers = self.centroids_standardized_.to_numpy()
        seg_ids = self.centroids_standardized_.index.to_numpy()
        labels = _nearest(z, centers) if len(z) else np.empty(0, dtype=np.int64)
        assigned = seg_ids[labels].astype("int64")
        names = np.array([self.segment_names_[int(s)] for s in seg_ids], dtype=object)
        return pd.DataFrame(
            {
                self.id_col: frame[self.id_col].reset_index(drop=True),  # keeps its dtype
                "segment_id": assigned,
                "segment_name": pd.Series(names[labels], dtype="str"),
            }
        )

    def summary(self) -> pd.DataFrame:
        """One row per segment: id, name, training size and share, centroid (original units)."""
        self._check_fitted()
        out = pd.DataFrame(
            {
                "segment_id": self.centroids_.index.to_numpy(),
                "segment_name": [self.segment_names_[int(s)] for s in self.centroids_.index],
                "n_customers": [self.segment_sizes_[int(s)] for s in self.centroids_.index],
            }
        )
        out["share"] = out["n_customers"] / max(self.n_train_, 1)
        return pd.concat([out, self.centroids_.reset_index(drop=True)], axis=1)

    # -- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable parameters and fitted state (no pickle needed)."""
        self._check_fitted()
        return {
            "kind": "SegmentModel",
            "format_version": FORMAT_VERSION,
            "params": {
                "k_min": self.k_min,
                "k_max": self.k_max,
                "sample_size": self.sample_size,
                "silhouette_sample_size": self.silhouette_sample_size,
                "random_state": self.random_state,
                "n_init": self.n_init,
                "n_threads": self.n_threads,
                "log_features": (
                    self.log_features
                    if self.log_features is None or isinstance(self.log_features, str)
                    else list(self.log_features)
                ),
                "feature_roles": None if self.feature_roles is None else dict(self.feature_roles),
                "max_match_distance": self.max_match_distance,
                "id_col": self.id_col,
            },
            "fitted": {
                "feature_cols": list(self.feature_cols_),
                "feature_roles": dict(self.feature_roles_),
                "log_features": list(self.log_features_),
                "constant_features": list(self.constant_features_),
                "impute_values": [float(v) for v in self.impute_values_],
                "center": [float(v) for v in self.center_],
                "scale": [float(v) for v in self.scale_],
                "k": self.k_,
                "n_train": self.n_train_,
                "silhouette_by_k": {str(k): v for k, v in self.silhouette_by_k_.items()},
                "segments": [
                    {
                        "segment_id": int(seg_id),
                        "segment_name": self.segment_names_[int(seg_id)],
                        "n_customers": self.segment_sizes_[int(seg_id)],
                        "centroid": [float(v) for v in self.centroids_.loc[seg_id]],
                        "centroid_standardized": [
                            float(v) for v in self.centroids_standardized_.loc[seg_id]
                        ],
                    }
                    for seg_id in self.centroids_.index
                ],
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentModel:
        """Rebuild a fitted model from :meth:`to_dict` output."""
        if data.get("kind") != "SegmentModel" or data.get("format_version") != FORMAT_VERSION:
            raise UserError(
                "segments: not a SegmentModel artifact of format_version "
                f"{FORMAT_VERSION} (kind={data.get('kind')!r}, "
                f"format_version={data.get('format_version')!r})"
            )
        model = cls(**data["params"])
        fitted = data["fitted"]
        cols = list(fitted["feature_cols"])
        model.feature_cols_ = cols
        model.feature_roles_ = dict(fitted["feature_roles"])
        model.log_features_ = list(fitted["log_features"])
        model.constant_features_ = list(fitted["constant_features"])
        model.impute_values_ = pd.Series(fitted["impute_values"], index=cols, dtype="float64")
        model.center_ = pd.Series(fitted["center"], index=cols, dtype="float64")
        model.scale_ = pd.Series(fitted["scale"], index=cols, dtype="float64")
        model.k_ = int(fitted["k"])
        model.n_train_ = int(fitted["n_train"])
        model.silhouette_by_k_ = {int(k): float(v) for k, v in fitted["silhouette_by_k"].items()}
        segments = fitted["segments"]
        seg_ids = pd.Index([int(s["segment_id"]) for s in segments], name="segment_id")
        model.centroids_ = pd.DataFrame(
            [s["centroid"] for s in segments], index=seg_ids, columns=cols, dtype="float64"
        )
        model.centroids_standardized_ = pd.DataFrame(
            [s["centroid_standardized"] for s in segments],
            index=seg_ids,
            columns=cols,
            dtype="float64",
        )
        model.segment_names_ = {int(s["segment_id"]): s["segment_name"] for s in segments}
        model.segment_sizes_ = {int(s["segment_id"]): int(s["n_customers"]) for s in segments}
        return model

    def _check_fitted(self) -> None:
        if not hasattr(self, "centroids_"):
            raise RuntimeError("SegmentModel is not fitted; call fit() or from_dict() first")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _kmeans(k: int, n_init: int, random_state: int) -> KMeans:
    return KMeans(n_clusters=k, n_init=n_init, random_state=random_state, algorithm="lloyd")


def _nearest(z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre per row (ties -> lowest index), in chunks to bound memory."""
    out = np.empty(z.shape[0], dtype=np.int64)
    step = 200_000
    for start in range(0, z.shape[0], step):
        block = z[start : start + step]
        out[start : start + step] = cdist(block, centers, "sqeuclidean").argmin(axis=1)
    return out


def _check_features(frame: pd.DataFrame, feature_cols: Sequence[str]) -> list[str]:
    cols = list(dict.fromkeys(feature_cols))
    if not cols:
        raise UserError("segments: no feature columns given")
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise UserError(
            f"segments: feature columns missing from the frame: {', '.join(missing)}",
            hint="check the feature list in the dbt YAML against the feature table",
        )
    bad = [
        c
        for c in cols
        if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]
    if bad:
        raise UserError(
            f"segments: features must be numeric or boolean, not: {', '.join(bad)}",
            hint="encode categorical features in SQL before segmenting",
        )
    return cols


def _numeric_matrix(frame: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    """Float64 matrix of ``cols``; NA and +-inf become NaN."""
    if not len(frame):
        return np.empty((0, len(cols)), dtype="float64")
    arr = np.column_stack(
        [frame[c].to_numpy(dtype="float64", na_value=np.nan) for c in cols]
    ).astype("float64", copy=False)
    arr[~np.isfinite(arr)] = np.nan
    return arr


__all__ = [
    "NAME_Z_THRESHOLD",
    "ROLES",
    "SegmentModel",
    "infer_feature_roles",
    "match_segment_ids",
    "name_segments",
]
