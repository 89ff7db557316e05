"""benchmarks/finetune_gpu.py on the CPU with a tiny model: both arms (the plain loop and
``prodcat finetune`` on Ray Train) run on the same rows, and the JSON and Markdown report carry
their rates and the ratio; the benchmark's tokenizers are refused when they lose the vocabulary."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from prodcat.core.paths import REPO_ROOT
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.integration


def _load(name: str):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / f"benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetune_benchmark_runs_both_arms_on_the_cpu(ray_session, tmp_path):
    import pyarrow.parquet as pq

    products, taxonomy = synthetic_products(90)
    pq.write_table(products, tmp_path / "products.parquet")
    (tmp_path / "taxonomy.json").write_text(taxonomy.to_json())
    bench = _load("finetune_gpu")
    out = tmp_path / "out"
    assert bench.main(["--tiny", "--archs", "minilm", "--products", str(tmp_path / "products.parquet"),
                       "--models", str(tmp_path / "models"), "--out", str(out), "--epochs", "2",
                       "--batch-size", "16", "--cpus", "1"]) == 0
    result = json.loads((out / "finetune_gpu.json").read_text())
    arms = result["models"]["minilm"]
    train_rows = sum(1 for s in products["split"].to_pylist() if s == "train")
    assert arms["plain"]["products"] == arms["ray_train"]["products"] == train_rows
    for arm in ("plain", "ray_train"):
        assert len(arms[arm]["epochs"]) == 2 and all(e["products_per_s"] > 0 for e in arms[arm]["epochs"])
    assert arms["plain"]["mean_tokens"] > 3                  # titles, not special tokens only
    assert arms["ratio"] == pytest.approx(arms["ray_train"]["epochs"][-1]["products_per_s"]
                                          / arms["plain"]["epochs"][-1]["products_per_s"], rel=1e-2)
    assert "**ratio**" in (out / "finetune_gpu.md").read_text() and result["errors"] == {}


def test_a_tokenizer_without_its_vocabulary_is_refused(tmp_path):
    import transformers

    models = _load("gpu_models")
    texts = ["Men slim fit blue jeans, cotton denim", "Women red cotton kurta, printed"] * 50
    good = models.build_tokenizer(tmp_path / "bpe", texts, vocab_size=400)
    assert models.check_tokenizer(good, texts) > 3
    # what RobertaTokenizer(vocab_file=...) saves under transformers 5: the specials alone
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "vocab.json").write_text(json.dumps({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}))
    (empty / "merges.txt").write_text("#version: 0.2\n")
    cls = getattr(transformers, "RobertaTokenizerFast", None) or transformers.RobertaTokenizer
    cls.from_pretrained(str(empty)).save_pretrained(empty)
    with pytest.raises(RuntimeError, match="special tokens only"):
        models.check_tokenizer(empty, texts)
