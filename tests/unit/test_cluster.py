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


# ---------------------------------------------------------------------- KubeRay's own schemas
MANIFESTS = sorted((ROOT / "cluster").glob("ray-*.yaml"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# each manifest against KubeRay's CRDs, strictly: tests/unit/test_yaml_files.py (every YAML file)


def test_an_invalid_manifest_fails_with_the_field_named(shared):
    """What a user sees (``python -m tests.fixtures.kuberay cluster/*.yaml``) for a misspelt
    field, a wrong type and a missing required field."""
    from tests.fixtures.kuberay import manifest_errors

    bad = _docs(ROOT / "cluster" / "ray-job.tune.yaml")[0]
    bad["spec"]["shutdownAfterJobFinish"] = bad["spec"].pop("shutdownAfterJobFinishes")
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "4"
    del bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["name"]
    errors = manifest_errors(bad)
    assert any(e.startswith("spec: Additional properties are not allowed ('shutdownAfterJobFinish'")
               for e in errors), errors
    assert "spec.rayClusterSpec.workerGroupSpecs.0.replicas: '4' is not of type 'integer'" in errors
    assert any(e.startswith("spec.rayClusterSpec.headGroupSpec.template.spec.containers.0: 'name' is "
                            "a required property") for e in errors), errors
    assert len(errors) == 3
    assert manifest_errors({"apiVersion": "ray.io/v1", "kind": "RayCronJob"})[0].startswith("apiVersion/kind")


def test_rayservice_serve_config_passes_serve_schema_and_app_args():
    """serveConfigV2 is what `serve deploy` gets: Ray's ServeDeploySchema, then prodcat's AppArgs,
    with every section of serve/config.yaml given (nothing silently falls back to a default) and
    the model a self-contained cascade folder (`prodcat cascade export --include-weights`)."""
    from ray.serve.schema import ServeDeploySchema

    from prodcat.serve.schemas import AppArgs

    service = _docs(ROOT / "cluster" / "ray-service.cascade.yaml")[0]
    config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    local = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())["applications"][0]
    app = config.applications[0]
    assert app.import_path == local["import_path"] and app.name == local["name"]
    args = AppArgs.model_validate(app.args)
    assert set(app.args) == set(local["args"]) and args.cascade.startswith("s3://")
    assert args.multimodal_stage.num_gpus == 1           # the manifest has a GPU worker group
    group_gpus = [g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
                  for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    assert any(group_gpus)


@pytest.mark.parametrize("path", [p for p in MANIFESTS if p.name.startswith("ray-job.")],
                         ids=lambda p: p.name)
def test_rayjob_entrypoint_parses_with_prodcat_cli(path):
    """A RayJob's entrypoint is a prodcat command line its own parser accepts."""
    import shlex

    from prodcat.cli import build_parser
    from prodcat.tune.cli import build_parser as tune_parser

    argv = shlex.split(_docs(path)[0]["spec"]["entrypoint"])
    if argv[:3] == ["python", "-m", "prodcat.tune"]:
        tune_parser().parse_args(argv[3:])
    else:
        assert argv[0] == "prodcat" or argv[:3] == ["python", "-m", "prodcat"], argv
        build_parser().parse_args(argv[1:] if argv[0] == "prodcat" else argv[3:])


def test_grafana_dashboard_queries_only_metrics_prodcat_exports():
    """cluster/grafana-dashboard.json plots every metric of prodcat.core.telemetry and names no
    other prodcat metric (Ray adds the ``ray_`` prefix, counters ``_total``, histograms
    ``_bucket``)."""
    import json

    from prodcat.core.telemetry import METRICS

    dashboard = json.loads((ROOT / "cluster" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set()
    for name in re.findall(r"ray_(prodcat_[a-z_0-9]+)", " ".join(exprs)):
        for suffix in ("_total", "_bucket", "_count", "_sum"):
            name = name.removesuffix(suffix)
        used.add(name)
    assert used == set(METRICS)
