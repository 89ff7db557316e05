"""benchmarks/embed_gpu.py on the CPU with tiny models: every measurement runs (ceilings, wrappers,
run_embedding with the production config's shape, GPU settings resolving to CPUs, the plain
DataLoader loop) and the JSON and Markdown report are written."""

from __future__ import annotations

import importlib.util
import json

import pytest

from prodcat.core.paths import REPO_ROOT
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.integration


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("embed_gpu", REPO_ROOT / "benchmarks/embed_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_runs_on_the_cpu_with_tiny_models(ray_session, tmp_path):
    import pyarrow.parquet as pq

    products, _ = synthetic_products(12, image_dir=tmp_path / "img", image_size=(60, 80))
    pq.write_table(products, tmp_path / "products.parquet")
    bench = _load_benchmark()
    out = tmp_path / "out"
    assert bench.main(["--tiny", "--products", str(tmp_path / "products.parquet"), "--n", "12",
                       "--repeat", "2", "--models-from", str(tmp_path / "models"),
                       "--out", str(out)]) == 0
    result = json.loads((out / "embed_gpu.json").read_text())
    assert result["size"] == "tiny" and result["device"].startswith("cpu")
    assert result["text_tokens_mean"] > 3          # the titles' words, not the special tokens alone
    assert set(result["ceiling"]) == {"text", "image", "clip_text", "clip_image"}
    assert all(c["best"] > 0 for c in result["ceiling"].values())
    assert all(w["forward_products_per_s"] > 0 for w in result["wrappers"].values())
    run = result["pipeline"][0]
    assert run["products"] == 24 and run["gpu"] is None             # no NVML on the CPU
    assert all(e["num_gpus"] == 0.0 for e in run["encoders"].values())   # auto → 0 without GPUs
    assert run["failures"]["image"] == {"no_image": 2}                 # every 7th synthetic product
    assert result["plain_loop"]["products"] == 24
    assert set(result["gpu_cost_us"]) == {"text", "image", "clip"}
    report = (out / "embed_gpu.md").read_text()
    assert "bare forward items/s" in report and "plain loop" in report
