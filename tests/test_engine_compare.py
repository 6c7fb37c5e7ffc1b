"""The row comparison the engine tests rely on (tests/engine_compare.py), on driver-shaped values."""

from __future__ import annotations

import pytest

from engine_compare import _equal, _normalize


@pytest.mark.parametrize(
    ("duckdb_value", "other_value", "equal"),
    [
        # DuckDB returns JSON as text; psycopg returns jsonb as dicts and lists
        ('{"a": 1, "b": [1, 2]}', {"b": [1, 2], "a": 1}, True),
        ('[{"SKU": "s-1", "quantity": 1}]', [{"SKU": "s-1", "quantity": 1}], True),
        ('[{"SKU": "s-1", "quantity": 1}]', [{"SKU": "s-2", "quantity": 1}], False),
        ('[{"SKU": "s-1"}]', [{"SKU": "s-1"}, {"SKU": "s-1"}], False),
        ('{"price": 0.1}', {"price": 0.1 + 1e-12}, True),
        # SQL lists stay lists, element by element
        ([1, 2], [1, 2], True),
        ([1, 2], [1, 3], False),
        (["a", None], ["a", None], True),
        # a SQL list that happens to start with "json" is still a list, not a document
        (["json", "x"], ["json", "x"], True),
        (["json", "x"], ["json", "y"], False),
        (["json", '{"a": 1}'], ["json", {"a": 2}], False),
        (["json", '{"a": 1}'], ["json", {"a": 1}], True),
        # a document never equals a plain string or number
        ('{"a": 1}', "a", False),
    ],
)
def test_values_compare_as_their_logical_value(duckdb_value, other_value, equal) -> None:
    assert _equal(_normalize(duckdb_value), _normalize(other_value), 1e-9) is equal


def test_sort_keys_do_not_depend_on_how_a_document_arrived() -> None:
    from engine_compare import _sort_key

    as_text = (_normalize('{"b": 1, "a": [2]}'),)
    as_dict = (_normalize({"a": [2], "b": 1}),)
    assert _sort_key(as_text) == _sort_key(as_dict)
