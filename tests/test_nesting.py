"""The nesting check a sender runs on big payloads: it must agree with cbor2's decoder (what it
refuses for depth, exactly), and the C walk must agree with its Python reference on any bytes."""

from __future__ import annotations

import io
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stereo.wire.nesting import MAX_DEPTH, nesting_exceeds_py
from stereo.wire.protocol import accelerated, nesting_exceeds

WALKS = [pytest.param(nesting_exceeds, id="C"), pytest.param(nesting_exceeds_py, id="python")]

# Container kinds wrapped around a value, from the inside out; "set" (tag 258 and an array)
# counts twice, a dict key needs a hashable value (else it becomes a dict value).
KINDS = ["list", "tuple", "dict value", "dict key", "tag", "set", "list with siblings"]
leaves = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=5), st.sampled_from([[], {}])
)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except (TypeError, RuntimeError):  # cbor2's CBORTag raises the latter
        return False
    return True


def wrap(value: Any, kind: str) -> Any:
    if kind == "list":
        return [value]
    if kind == "tuple":
        return (value,)
    if kind == "dict key" and _hashable(value):
        return {value: 0}
    if kind in ("dict key", "dict value"):
        return {"k": value}
    if kind == "tag":
        return cbor2.CBORTag(40000, value)  # unassigned: decoded as a CBORTag
    if kind == "set" and _hashable(value):
        return frozenset([value])
    return [1, value, "x"]


@st.composite
def deep_values(draw: st.DrawFn) -> Any:
    value = draw(leaves)
    for kind in draw(
        st.lists(st.sampled_from(KINDS), min_size=MAX_DEPTH - 3, max_size=MAX_DEPTH + 1)
    ):
        value = wrap(value, kind)
    return value


OPTIONS = [{}, {"indefinite_containers": True}, {"string_referencing": True}]


def decoder_refuses_for_depth(data: bytes) -> bool:
    try:
        cbor2.loads(data)
    except cbor2.CBORDecodeError as exc:
        assert "nesting depth" in str(exc), exc  # nothing else may be wrong with it
        return True
    return False


@pytest.mark.skipif(
    not hasattr(cbor2.CBORDecoder(io.BytesIO(b"")), "max_depth"),
    reason="this cbor2's decoder has no depth setting to agree with",
)
@pytest.mark.parametrize("walk", WALKS)
@settings(max_examples=150, deadline=None)
@given(value=deep_values(), options=st.sampled_from(OPTIONS))
def test_the_walk_refuses_exactly_what_the_decoder_refuses(
    walk: Any, value: Any, options: dict[str, bool]
) -> None:
    data = cbor2.dumps(value, **options)
    assert walk(data, MAX_DEPTH) == decoder_refuses_for_depth(data)


@pytest.mark.parametrize("walk", WALKS)
def test_the_limit_counts_enclosing_containers(walk: Any) -> None:
    limit = MAX_DEPTH
    assert not walk(b"\x81" * limit + b"\x00", limit)  # the 0 sits inside `limit` arrays
    assert walk(b"\x81" * (limit + 1) + b"\x00", limit)
    assert not walk(b"\x81" * limit + b"\x80", limit)  # an empty innermost array holds nothing
    assert walk(b"\x9f" * (limit + 1) + b"\x00" + b"\xff" * (limit + 1), limit)  # indefinite
    assert walk(b"\xd9\x9c\x40" * (limit + 1) + b"\x00", limit)  # tags
    # The chunks of an indefinite-length string are not items of their own...
    assert not walk(b"\x81" * limit + b"\x7f\x61a\x61b\xff", limit)
    # ...but the break that ends an indefinite-length array or map counts as an item in it.
    assert walk(b"\x81" * limit + b"\x9f\xff", limit)
    assert not walk(b"\x81" * (limit - 1) + b"\xbf\xff", limit)
    # Siblings: only the nesting counts, not how many items there are.
    assert not walk(b"\x99\x04\xb0" + b"\x81\x00" * 1200, 2)  # [[0], [0], ...]


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=600), limit=st.integers(0, 50))
def test_c_and_python_agree_on_any_bytes(data: bytes, limit: int) -> None:
    assert accelerated(), "stereo.wire._speedups did not build"
    assert nesting_exceeds(data, limit) == nesting_exceeds_py(data, limit)


@settings(max_examples=200, deadline=None)
@given(value=deep_values(), options=st.sampled_from(OPTIONS), cut=st.integers(0, 2000))
def test_c_and_python_agree_on_values_and_their_truncations(
    value: Any, options: dict[str, bool], cut: int
) -> None:
    data = cbor2.dumps(value, **options)
    for sample in (data, data[:cut], data + b"\x00\xff"):
        assert nesting_exceeds(sample, MAX_DEPTH) == nesting_exceeds_py(sample, MAX_DEPTH)
