"""Cluster manifests: rayVersion == image tag's Ray version == the ray pin in pyproject.toml."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _ray_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(re.search(r"==([\d.]+)", d).group(1) for d in deps if d.startswith("ray["))


def _ray_versions(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "rayVersion":
                yield str(value)
            yield from _ray_versions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _ray_versions(item)


@pytest.mark.parametrize("path", sorted((ROOT / "cluster").glob("ray-*.yaml")), ids=lambda p: p.name)
def test_manifest_ray_version_matches_pin(path):
    versions = list(_ray_versions(yaml.safe_load(path.read_text())))
    assert versions and set(versions) == {_ray_pin()}


def test_image_tag_matches_pin():
    assert f"rayproject/ray:{_ray_pin()}-" in (ROOT / "cluster" / "Dockerfile").read_text()
