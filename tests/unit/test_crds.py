from __future__ import annotations

from portico.api.crds import crd_manifest, rendered_crds
from portico.api.v1alpha1 import KINDS, BGPPeer, IPAllocation, IPPool, L2Advertisement


def test_committed_crds_match_the_types() -> None:
    for path, text in rendered_crds().items():
        assert path.read_text() == text, f"{path} is stale: run `portico gen crds`"


def test_schemas_are_structural() -> None:
    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node, where
            if "properties" in node or "items" in node:
                assert node.get("type") in ("object", "array"), where
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
    for kind in KINDS:
        walk(crd_manifest(kind)["spec"]["versions"][0]["schema"], kind.KIND)


def test_everything_but_allocations_has_a_status_subresource() -> None:
    for kind in (IPPool, L2Advertisement, BGPPeer):
        assert crd_manifest(kind)["spec"]["versions"][0]["subresources"] == {"status": {}}
    assert "subresources" not in crd_manifest(IPAllocation)["spec"]["versions"][0]
