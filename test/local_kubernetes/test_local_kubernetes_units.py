"""Table tests of the pure parts: selectors, patches, image references, log tails."""

from __future__ import annotations

from typing import Any

import pytest

from simulation_components.local_kubernetes.errors import ApiError
from simulation_components.local_kubernetes.logs import LogBuffer
from simulation_components.local_kubernetes.patching import (
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)
from simulation_components.local_kubernetes.selectors import FieldSelector, LabelSelector
from simulation_components.local_kubernetes.validation import image_reference_is_valid, label_value_errors

LABELS = {"app": "x", "tier": "db", "version": "3", "example.com/role": "main"}


@pytest.mark.parametrize(("selector", "matches"), [
    ("", True),
    ("app=x", True),
    ("app==x,tier=db", True),
    ("app=x,tier=web", False),
    ("app!=y", True),
    ("missing!=y", True),
    ("app", True),
    ("!app", False),
    ("!missing", True),
    ("tier in (web, db)", True),
    ("tier notin (db)", False),
    ("version>2", True),
    ("version<3", False),
    ("example.com/role=main", True),
    ("app=", False),
    ("missing in (a,)", False),
])
def test_label_selectors(selector: str, matches: bool) -> None:
    assert LabelSelector(selector).matches(LABELS) is matches


@pytest.mark.parametrize("selector", ["app in x", "app=x=y", "in (a)", "app in ()", "bad key!=1", "a,", "a=-x"])
def test_malformed_label_selectors_are_bad_requests(selector: str) -> None:
    with pytest.raises(ApiError) as error:
        LabelSelector(selector)
    assert error.value.code == 400


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "p", "namespace": "n"}, "status": {"phase": "Running"}}
    assert FieldSelector("metadata.name=p,status.phase!=Failed", "pods").matches(pod)
    assert not FieldSelector("status.phase=Pending", "pods").matches(pod)
    with pytest.raises(ApiError):
        FieldSelector("spec.containers=x", "pods")


def test_merge_patch() -> None:
    assert apply_merge_patch({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3}, "l": [3]}


def test_strategic_merge_patch_merges_lists_by_key() -> None:
    pod: dict[str, Any] = {
        "metadata": {"finalizers": ["a"], "ownerReferences": [{"uid": "1", "name": "x"}]},
        "spec": {"containers": [{"name": "c", "image": "i:1", "env": [{"name": "A", "value": "1"}]}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}],
                   "containerStatuses": [{"name": "c", "ready": False}]},
    }
    patched = apply_strategic_merge_patch(pod, {
        "metadata": {"finalizers": ["b"], "ownerReferences": [{"uid": "1", "$patch": "delete"}]},
        "spec": {"containers": [{"name": "c", "env": [{"name": "B", "value": "2"}]}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [{"name": "c"}],
                   "$setElementOrder/conditions": [{"type": "Ready"}]},
    })
    assert patched["metadata"] == {"finalizers": ["a", "b"], "ownerReferences": []}
    assert patched["spec"]["containers"][0]["image"] == "i:1"
    assert [e["name"] for e in patched["spec"]["containers"][0]["env"]] == ["A", "B"]
    assert patched["status"]["conditions"] == [{"type": "Ready", "status": "True"},
                                               {"type": "PodScheduled", "status": "True"}]
    assert patched["status"]["containerStatuses"] == [{"name": "c"}]  # atomic list: replaced
    assert pod["status"]["conditions"][0]["status"] == "False"  # the input is untouched
    replaced = apply_strategic_merge_patch(pod, {"spec": {"$patch": "replace", "containers": []}})
    assert replaced["spec"] == {"containers": []}


def test_json_patch() -> None:
    document = {"a": [1, 2], "b": {"c~d/e": 1}}
    assert apply_json_patch(document, [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "replace", "path": "/a/0", "value": 0},
        {"op": "move", "from": "/b/c~0d~1e", "path": "/moved"},
        {"op": "copy", "from": "/a", "path": "/copy"},
        {"op": "test", "path": "/moved", "value": 1},
        {"op": "remove", "path": "/a/1"},
    ]) == {"a": [0, 3], "b": {}, "moved": 1, "copy": [0, 2, 3]}
    assert document == {"a": [1, 2], "b": {"c~d/e": 1}}
    for operations in ([{"op": "remove", "path": "/nope"}], [{"op": "test", "path": "/a/0", "value": 9}],
                       [{"op": "replace", "path": "/a/5", "value": 1}]):
        with pytest.raises(ApiError) as error:
            apply_json_patch(document, operations)
        assert error.value.code == 422


@pytest.mark.parametrize(("image", "valid"), [
    ("fake_model:0.0.1", True),
    ("dots/fake-model:latest", True),
    ("ghcr.io/org/model@sha256:" + "a" * 64, True),
    ("localhost:5000/x", True),
    ("Upper/Case:1", False),
    ("has space:1", False),
    ("x:bad tag", False),
    ("a//b", False),
    ("", False),
])
def test_image_references(image: str, valid: bool) -> None:
    assert image_reference_is_valid(image) is valid


def test_label_values() -> None:
    assert label_value_errors("") == []
    assert label_value_errors("a" * 63) == []
    assert label_value_errors("a" * 64)
    assert label_value_errors("-a")


def test_log_tail_and_capacity() -> None:
    buffer = LogBuffer(capacity=20)
    buffer.append(b"one\ntwo\nthree\n")
    assert buffer.read(tail_lines=2) == b"two\nthree\n"
    assert buffer.read(tail_lines=10) == b"one\ntwo\nthree\n"
    buffer.append(b"four\nfive\n")
    assert buffer.read() == b"three\nfour\nfive\n"  # the oldest whole lines were dropped
    assert buffer.read(limit_bytes=5) == b"three"
