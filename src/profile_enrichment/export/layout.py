"""The ONE definition of the ``_<tenantId>.modelInsights`` layout.

Both the Schema Registry payload (:mod:`.payloads`) and the record builder (:mod:`.records`)
are generated from :data:`MODEL_INSIGHTS`, so the schema we register and the records we
write cannot disagree. It mirrors the ``modelInsights`` block of the project's XDM oracle
(``shared/xdm/profile_record.schema.json``); the tests check records against that oracle.

Each :class:`Field` says its XDM type, title, description and where its value comes from
in ``profile_insights`` (``source`` column, a ``const``, a JSON column for arrays, or a
``map_sources`` mapping for maps).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from profile_enrichment.errors import UserError

_TENANT_RE = re.compile(r"^[A-Za-z0-9_]+$")


def validate_tenant_id(tenant: str) -> str:
    """Return ``tenant`` if it is a valid AEP tenant id (letters, digits, underscores).

    Accepts it with or without the leading underscore of the ``_<tenantId>`` field name.
    """
    if not isinstance(tenant, str) or not _TENANT_RE.match(tenant.lstrip("_") or "-"):
        raise UserError(
            f"invalid tenant id {tenant!r}: use letters, digits and underscores only",
            hint="copy the tenant id from the Schema Registry (GET /stats -> tenantId)",
        )
    return tenant.lstrip("_")


def tenant_key(tenant: str) -> str:
    """The record's root field for the tenant namespace: ``_<tenantId>``."""
    return "_" + validate_tenant_id(tenant)


@dataclass(frozen=True)
class Field:
    """One field of the layout.

    ``xdm_type`` is one of: string, date, number, integer, object, array, map.
    Value origin (leaves): ``source`` (a profile_insights column), ``const`` (a fixed value),
    or ``from_context`` (``"as_of"``: the export's as-of date). Arrays of objects read a JSON
    column (``source``) whose elements' keys are the child names. Maps read ``map_sources``
    (map key -> column).
    """

    name: str
    xdm_type: str
    title: str
    description: str
    source: str | None = None
    const: Any = None
    fallback_context: str | None = None
    children: tuple[Field, ...] = ()
    map_sources: Mapping[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] = ()
    pattern: str | None = None
    to_string: bool = False  # coerce numbers from the source to strings (ids, factor values)


def _propensity(kind: str, label: str) -> Field:
    p = kind  # column prefix in profile_insights
    return Field(
        kind,
        "object",
        f"{label} propensity",
        f"{label} propensity score for the profile, in the style of Customer AI output.",
        required=("score",),
        children=(
            Field(
                "score",
                "number",
                "Score",
                f"Relative likelihood of {kind}, 0-100.",
                source=f"{p}_score",
                minimum=0,
                maximum=100,
            ),
            Field(
                "probability",
                "number",
                "Probability",
                f"Calibrated probability of {kind}, 0-1.",
                source=f"{p}_probability",
                minimum=0,
                maximum=1,
            ),
            Field(
                "percentile",
                "integer",
                "Percentile",
                "Percentile rank of the score, 1-100.",
                source=f"{p}_percentile",
                minimum=1,
                maximum=100,
            ),
            Field(
                "bucket",
                "string",
                "Bucket",
                "Score bucket: high, medium or low.",
                source=f"{p}_bucket",
                enum=("high", "medium", "low"),
            ),
            Field(
                "propensityType",
                "string",
                "Propensity type",
                "What the score predicts.",
                const=kind,
            ),
            Field(
                "scoreDate",
                "date",
                "Score date",
                "As-of date of the score.",
                source="score_date",
                fallback_context="as_of",
            ),
            Field(
                "influentialFactors",
                "array",
                "Influential factors",
                "Top features that drove this profile's score.",
                source=f"{p}_factors_json",
                required=("code",),
                children=(
                    Field("code", "string", "Code", "Feature code of the factor.", source="code"),
                    Field(
                        "value",
                        "string",
                        "Value",
                        "The profile's value of the feature.",
                        source="value",
                        to_string=True,
                    ),
                    Field(
                        "importance",
                        "string",
                        "Importance",
                        "Importance: low, medium or high.",
                        source="importance",
                        enum=("low", "medium", "high"),
                    ),
                    Field(
                        "direction",
                        "string",
                        "Direction",
                        "Whether the factor increases or decreases the score.",
                        source="direction",
                        enum=("increases", "decreases"),
                    ),
                ),
            ),
        ),
    )


MODEL_INSIGHTS = Field(
    "modelInsights",
    "object",
    "Model insights",
    "Project-defined model scores for the profile (churn, conversion, CLV, affinity, segment).",
    children=(
        Field(
            "scoreDate",
            "date",
            "Score date",
            "The as-of date the scores describe (features use only events before it).",
            source="score_date",
            fallback_context="as_of",
        ),
        Field(
            "modelVersions",
            "map",
            "Model versions",
            "Map of model name to the model version that produced the values in this record.",
            map_sources={
                "churn": "churn_model_version",
                "conversion": "conversion_model_version",
                "clv": "clv_model_version",
                "segment": "segment_model_version",
            },
        ),
        _propensity("churn", "Churn"),
        _propensity("conversion", "Conversion"),
        Field(
            "customerLifetimeValue",
            "object",
            "Customer lifetime value",
            "Predicted customer lifetime value over the horizon (BG/NBD + Gamma-Gamma).",
            required=("predictedValue",),
            children=(
                Field(
                    "predictedValue",
                    "number",
                    "Predicted value",
                    "Expected monetary value over the horizon, in currencyCode.",
                    source="clv_expected_value",
                    minimum=0,
                ),
                Field(
                    "expectedPurchases",
                    "number",
                    "Expected purchases",
                    "Expected number of purchases over the horizon (BG/NBD).",
                    source="clv_expected_purchases",
                    minimum=0,
                ),
                Field(
                    "probabilityAlive",
                    "number",
                    "Probability alive",
                    "Probability that the customer is still active (BG/NBD).",
                    source="clv_probability_alive",
                    minimum=0,
                    maximum=1,
                ),
                Field(
                    "expectedOrderValue",
                    "number",
                    "Expected order value",
                    "Expected average order value (Gamma-Gamma).",
                    source="clv_expected_order_value",
                    minimum=0,
                ),
                Field(
                    "currencyCode",
                    "string",
                    "Currency code",
                    "ISO 4217 code of predictedValue and expectedOrderValue.",
                    source="clv_currency_code",
                    pattern="^[A-Z]{3}$",
                ),
                Field(
                    "horizonDays",
                    "integer",
                    "Horizon (days)",
                    "Length of the prediction horizon in days.",
                    source="clv_horizon_days",
                    minimum=1,
                    maximum=32768,
                ),
                Field(
                    "percentile",
                    "integer",
                    "Percentile",
                    "Percentile rank of predictedValue, 1-100.",
                    source="clv_percentile",
                    minimum=1,
                    maximum=100,
                ),
                Field(
                    "scoreDate",
                    "date",
                    "Score date",
                    "As-of date of the prediction.",
                    source="score_date",
                    fallback_context="as_of",
                ),
            ),
        ),
        Field(
            "affinity",
            "object",
            "Affinity",
            "The profile's strongest category affinities.",
            children=(
                Field(
                    "topCategories",
                    "array",
                    "Top categories",
                    "Categories ranked by affinity score (1 = strongest).",
                    source="top_categories_json",
                    required=("id", "score"),
                    children=(
                        Field(
                            "id",
                            "string",
                            "Category ID",
                            "Category identifier.",
                            source="id",
                            to_string=True,
                        ),
                        Field(
                            "name",
                            "string",
                            "Category name",
                            "Category display name.",
                            source="name",
                        ),
                        Field(
                            "score",
                            "number",
                            "Affinity score",
                            "Share of the profile's affinity for the category.",
                            source="score",
                        ),
                        Field(
                            "rank",
                            "integer",
                            "Rank",
                            "Rank of the category, 1 = strongest.",
                            source="rank",
                            minimum=1,
                            maximum=32768,
                        ),
                    ),
                ),
            ),
        ),
        Field(
            "segment",
            "object",
            "Segment",
            "Behavioural segment assigned by the clustering model.",
            required=("segmentID",),
            children=(
                Field(
                    "segmentID",
                    "string",
                    "Segment ID",
                    "Identifier of the segment.",
                    source="segment_id",
                    to_string=True,
                ),
                Field(
                    "segmentName",
                    "string",
                    "Segment name",
                    "Readable name of the segment.",
                    source="segment_name",
                ),
                Field(
                    "modelName",
                    "string",
                    "Model name",
                    "Name of the segmentation model.",
                    const="segment",
                ),
            ),
        ),
    ),
)
