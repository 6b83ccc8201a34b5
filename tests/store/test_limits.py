"""The shared limits: the byte scan a reader runs before parsing measures exactly the
nesting the parser would meet, whatever the strings hold."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trainhooks._store._limits import json_text_depth

TRICKY_TEXT = st.text(alphabet='[]{}"\\,:ab \u00e9\ud7ff', max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TRICKY_TEXT,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(TRICKY_TEXT, children, max_size=3)
    ),
    max_leaves=30,
)


def container_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(container_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(container_depth, value), default=0)
    return 0


@settings(max_examples=300, derandomize=True, database=None)
@given(value=JSON_VALUES, ensure_ascii=st.booleans())
def test_byte_scan_depth_equals_the_parsed_nesting(value: Any, ensure_ascii: bool) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
    assert json_text_depth(text) == container_depth(value)


def test_byte_scan_depth_of_deep_and_wide_text() -> None:
    assert json_text_depth(b"[" * 5000 + b"]" * 5000) == 5000
    wide = b"[" + b",".join([b"{}"] * 3_000_000) + b"]"  # crosses the 1 MiB chunks
    assert json_text_depth(wide) == 2
