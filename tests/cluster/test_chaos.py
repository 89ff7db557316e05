"""The chaos harness (``benchmarks/chaos.py``, issue 22) in small: a ``ray start`` cluster (head +
2 worker nodes), the main job submitted with ``ray job submit`` for its embedding stage (tiny
encoders, a synthetic product table), a worker node SIGKILLed at a seeded moment inside the stage
and replaced, and the run compared with an undisturbed one: the job succeeded, the store holds
every product once, the same products and rows as the undisturbed run."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.fixtures.models import build_tiny_efficientnet, build_tiny_roberta
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _harness():
    spec = importlib.util.spec_from_file_location("chaos", REPO / "benchmarks" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_main_job_loses_nothing_when_a_worker_node_dies_while_it_embeds(tmp_path, report):
    chaos = _harness()
    seed_run = tmp_path / "seed"
    products, _ = synthetic_products(1200, image_dir=tmp_path / "images", seed=5)
    (seed_run / "catalog").mkdir(parents=True)
    pq.write_table(products, seed_run / "catalog" / "products.parquet")
    encoders = {"block_rows": 32, "write_rows": 64, "decode_batch_size": 32, "encoders": {
        "text": {"family": "text", "weights": str(build_tiny_roberta(tmp_path / "roberta")),
                 "max_tokens": 32, "device": "cpu", "batch_size": 32, "num_cpus": 0.5, "pool_size": 1},
        "image": {"family": "image", "weights": str(build_tiny_efficientnet(tmp_path / "effnet")),
                  "image_size": 64, "device": "cpu", "batch_size": 32, "num_cpus": 0.5, "pool_size": 1}}}
    (tmp_path / "encoders.yaml").write_text(yaml.safe_dump(encoders))

    # a short work dir: it holds the cluster's --temp-dir, and Ray's socket paths must stay
    # under 107 bytes (pytest's tmp_path is too long)
    work = tempfile.mkdtemp(prefix="ch", dir=os.environ.get("TMPDIR", "/tmp"))
    try:
        result = chaos.main(["--seeds", "7", "--stages", "embed", "--set",
                             f"encoders={tmp_path}/encoders.yaml", "--seed-run", str(seed_run),
                             "--workdir", work, "--out", str(tmp_path / "results"), "--tag", "test",
                             "--timeout", "900"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    run = result["runs"][0]
    assert run["status"] == "SUCCEEDED", run["log_tail"]
    kill = run["kills"][0]
    assert kill["stage"] == "embed" and kill["inside_stage"], kill     # killed while it embedded
    assert kill["what"]["processes_killed"] > 0 and kill["replacement_up_s"] is not None
    checks = run["checks"]
    store = checks["datasets"]["embeddings"]
    assert store["disturbed"]["product_ids"] == products.num_rows      # none missing
    assert store["disturbed"]["rows"] == products.num_rows             # none twice
    assert store["same_rows_and_products"] and checks["store_duplicates"] == {"image+text": 0}
    assert run["nothing_lost"]
    saved = json.loads((tmp_path / "results" / "chaos_test.json").read_text())
    assert saved["runs"][0]["stages"]["rows"][0]["stage"] == "embed"
    assert "| 7 | embed |" in (tmp_path / "results" / "chaos_test.md").read_text()
    report.append({"test": "chaos (embed stage as a ray job)", "kill": {
        k: kill[k] for k in ("node", "after_s", "replacement_up_s")}, "what": kill["what"],
        "stage_row": run["stages"]["rows"][0]})
