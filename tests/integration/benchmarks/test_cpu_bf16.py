"""benchmarks/cpu_bf16.py on a few synthetic products with the real offline encoders (../shared):
both precisions timed, the ratio is bf16 / float32, and the vectors of the two arms agree."""

from __future__ import annotations

import json

import pytest

from prodcat.core.runtime import cpu_computes_bf16
from tests.fixtures.predictions import benchmark
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.integration


def test_cpu_bf16_benchmark_times_both_precisions(shared, tmp_path):
    import pyarrow.parquet as pq

    products, _ = synthetic_products(24, image_dir=tmp_path / "images")
    pq.write_table(products, tmp_path / "products.parquet")
    result = benchmark("cpu_bf16").main(["--products", str(tmp_path / "products.parquet"), "--out",
                                         str(tmp_path / "out"), "--rows", "12", "--rounds", "1",
                                         "--steps", "2"])
    assert json.loads((tmp_path / "out" / "cpu_bf16.json").read_text()) == result
    assert result["rows"] == 12 and result["cpu_computes_bf16"] == cpu_computes_bf16()
    for name in ("text", "image", "finetune_step"):
        arms = result[name]
        assert arms["fp32"] > 0 and arms["bf16"] > 0
        assert arms["ratio"] == pytest.approx(arms["bf16"] / arms["fp32"], abs=2e-3)
    # the synthetic images are flat colours, the image encoder's worst case in bf16 (a cosine of
    # ~0.93 here, where 512 real product images gave >= 0.994: benchmarks/cpu_bf16.json)
    assert result["text"]["cosine_min"] > 0.995 and result["image"]["cosine_min"] > 0.9
