"""Property-based tests of event validation: any JSON-like batch gets, for every event,
either an accepted normalised event or an error naming what is wrong; never an exception."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from graphs.events import MAX_TS, EventValidator
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType

SCHEMA = GraphSchema(
    (NodeType("user", 10, (FeatureSpec("age", "categorical", cardinality=8),
                           FeatureSpec("vec", "dense", dim=2),
                           FeatureSpec("tags", "token_list", cardinality=50))),
     NodeType("item", 5)),
    (EdgeType("user", "clicks", "item", ts=True, weight=True),))
COUNTS = {"user": 10, "item": 5}

EDGES = [10**30, -(10**30), -1, 8, 50, 99, 2**63, float("inf"), float("-inf"), float("nan"), 1e300, 2.5]
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                        st.sampled_from(EDGES))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(st.text(max_size=5), inner,
                                                                               max_size=3)), max_leaves=6)
near = st.one_of(st.integers(-2, 12), json_value)              # ids near the valid range, or anything
node = st.fixed_dictionaries({"op": st.just("node"), "ntype": st.sampled_from(["user", "item", "nope", None]),
                              "id": near},
                             optional={"attrs": st.one_of(json_value, st.dictionaries(
                                 st.sampled_from(["age", "vec", "tags", "zzz"]), json_value, max_size=3)),
                                 "raw_id": json_value})
edge = st.fixed_dictionaries({"op": st.sampled_from(["edge", "remove_edge"]),
                              "etype": st.sampled_from(["user__clicks__item", "item__x__user", None]),
                              "src": near, "dst": near},
                             optional={"ts": st.one_of(st.integers(-5, MAX_TS + 5), json_value),
                                       "weight": json_value})
event = st.one_of(node, edge, json_value, st.dictionaries(st.text(max_size=5), json_value, max_size=4))


@settings(max_examples=400, deadline=None)
@given(st.lists(event, max_size=12))
def test_every_event_is_accepted_or_named_never_raised(events):
    validator = EventValidator(SCHEMA, COUNTS)
    accepted, errors = validator.check(events)
    assert len(accepted) + len(errors) == len(events)
    assert all(0 <= e.index < len(events) and str(e).startswith(f"event {e.index}: ") for e in errors)
    for ev in accepted:                                            # what is accepted is well-formed
        if ev["op"] == "node":
            assert isinstance(ev["id"], int) and isinstance(ev["attrs"], dict)
        else:
            assert 0 <= ev["src"] < validator.counts["user"] and 0 <= ev["dst"] < validator.counts["item"]
            assert 0 <= ev.get("ts", 0) < MAX_TS and math.isfinite(ev.get("weight", 0.0))
    assert validator.counts["user"] == 10 + sum(1 for ev in accepted if ev["op"] == "node" and ev["ntype"] == "user")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["age", "vec", "tags", "zzz"]), json_value, max_size=3))
def test_any_attribute_value_of_a_new_node_is_parsed_or_named(attrs):
    accepted, errors = EventValidator(SCHEMA, COUNTS).check([{"op": "node", "ntype": "user", "id": 10, "attrs": attrs}])
    assert len(accepted) + len(errors) == 1
    if errors:
        assert any(f"'{name}'" in str(errors[0]) for name in attrs), str(errors[0])   # names the attribute
    else:                                                          # accepted values are in range
        got = accepted[0]["attrs"]
        assert got.get("age") is None or 0 <= int(got["age"]) < 8
        assert all(0 <= int(t) < 50 for t in (got.get("tags") or []))
        assert got.get("vec") is None or all(math.isfinite(float(v)) for v in got["vec"])


def test_out_of_range_attributes_are_named():
    for attrs, says in (({"age": 10**30}, "'age' (categorical): bad value"), ({"age": 8}, "outside [0, 8)"),
                        ({"age": float("inf")}, "'age'"), ({"tags": [3, 50]}, "outside [0, 50)"),
                        ({"tags": "3"}, "expected a list"), ({"vec": [1e300, 2]}, "not finite"),
                        ({"age": True}, "not an integer"), ({"vec": [[0.5, 1.0]]}, "expected a list of 2"),
                        ({"vec": 1.0}, "expected a list of 2")):
        accepted, errors = EventValidator(SCHEMA, COUNTS).check([{"op": "node", "ntype": "user", "id": 10,
                                                                   "attrs": attrs}])
        assert not accepted and says in str(errors[0]), (attrs, str(errors[0]))
