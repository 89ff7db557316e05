"""A new platform as a user meets it: an unmapped export read through the generic adapter →
`prodcat catalog suggest-mapping` (bulk scoring on Ray with a tiny real cascade) → a build that
refuses the unreviewed suggestions → `prodcat catalog review` → `prodcat catalog build` with the
reviewed file → `prodcat embed` and `prodcat train` on a catalogue that includes it; a changed
export makes the suggestions stale; bulk scoring and the Python API answer partial paths (the
service: tests/integration/test_serve.py, which must run no Serve application in local testing
mode before its own)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from prodcat.cli import main

pytestmark = pytest.mark.integration

#: the shop's own categories and the toy taxonomy's categories a person would map them to
SHOP = {("Footwear", "Winter boots"): (3, "Boots"), ("Footwear", "Summer sandals"): (4, "Sandals"),
        ("Clothing", "Shirts & tops"): (5, "Shirts"), ("Kitchen", "Cups"): (8, "Mugs"),
        ("Living", "Ornaments"): (9, "Decor")}
WORDS = ["classic", "new", "premium", "blue", "red", "cotton", "soft", "large", "mini", "pro"]


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    from tests.fixtures.cascade import build_tiny_cascade

    return build_tiny_cascade(tmp_path_factory.mktemp("cascade"), n_products=120, steps=120)


def write_export(folder, per_category: int = 12, extra: tuple | None = None):
    """The shop's CSV export (its own columns and category tree) with PNG images, colours as the
    synthetic catalogue's (by category), titles in the same words."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    shop = dict(SHOP)
    if extra:
        shop[extra] = (9, "Decor")
    for (dept, aisle), (cid, name) in shop.items():
        colour = tuple(int(c) for c in np.random.default_rng(cid).integers(0, 255, 3))
        for k in range(per_category):
            sku = f"{cid}{k:03d}{len(rows)}"
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
            (folder / "images" / f"{sku}.png").write_bytes(buf.getvalue())
            words = " ".join(rng.choice(WORDS, 2))
            rows.append([sku, f"{words} {name}", f"A {words} {name.lower()} for everyday use.",
                         dept, aisle, f"{sku}.png"])
    with (folder / "export.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sku", "name", "body", "dept", "aisle", "image_file"])
        w.writerows(rows)
    return len(rows)


def adapter_file(folder, mapping) -> str:
    cfg = {"platform": "myshop", "format": "csv", "path": str(folder / "export.csv"),
           "columns": {"source_id": "sku", "title": "name", "description": "body", "image": "image_file"},
           "category": {"columns": ["dept", "aisle"]}, "image_template": "images/{image_file}",
           "mapping": mapping}
    path = folder / f"myshop-{'unmapped' if mapping is None else 'mapped'}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def google_file(tmp_path, taxonomy) -> str:
    """The taxonomy in the Google file format, for `catalog build --set taxonomy=...`."""
    lines = ["# Google_Product_Taxonomy_Version: toy"]
    lines += [f"{int(taxonomy.ids[n])} - {taxonomy.path(n)}" for n in range(1, len(taxonomy))
              if not taxonomy.virtual[n]]
    path = tmp_path / "google.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_unmapped_export_to_suggestions_review_build_and_training(ray_session, cascade, tmp_path, capsys):
    shop = tmp_path / "myshop"
    n = write_export(shop)
    google = google_file(tmp_path, cascade["taxonomy"])
    sugg = tmp_path / "suggestions"
    assert main(["catalog", "suggest-mapping", "--adapter", adapter_file(shop, None),
                 "--model", cascade["cascade"], "--output", str(sugg), "--max-per-category", "8",
                 "--set", "scoring.num_cpus=0.5"]) == 0
    doc = yaml.safe_load((sugg / "mapping.yaml").read_text())
    assert set(doc["mappings"]) | set(doc["excluded"]) == {f"{d} > {a}" for d, a in SHOP}
    assert all(e["accepted"] is False for e in doc["mappings"].values())
    assert doc["suggested"]["products"] == n and doc["suggested"]["scored"] == 8 * len(SHOP)
    right = {f"{d} > {a}": cid for (d, a), (cid, _) in SHOP.items()}
    top1 = {k: e["category_id"] for k, e in doc["mappings"].items()}
    assert sum(top1[k] == right[k] for k in top1) >= 4          # the tiny model reads the titles
    table = pq.read_table(sugg / "suggestions.parquet")
    assert table.column_names[:6] == ["platform", "source_category", "rank", "suggested_category_id",
                                      "share", "confidence"]
    assert set(table["platform"].to_pylist()) == {"myshop"}
    assert all(0 <= c <= 1 for c in table["confidence"].to_pylist())
    assert "data:image/jpeg;base64," in (sugg / "review.html").read_text()

    # a build refuses the suggestions as they are
    catalog = tmp_path / "catalog"
    build = ["catalog", "build", "--output", str(catalog), "--no-check-images", "--set", f"taxonomy={google}",
             "--set", "group_images=false"]
    capsys.readouterr()
    assert main(build + ["--platform", adapter_file(shop, str(sugg / "mapping.yaml"))]) == 2
    assert "unreviewed suggestions (accepted: false)" in capsys.readouterr().err

    # a person accepts the right ones and corrects the others
    reviewed = tmp_path / "reviewed.yaml"
    argv = ["catalog", "review", "--suggestions", str(sugg), "--taxonomy", google, "--output", str(reviewed)]
    for key, cid in right.items():
        argv += ["--accept", key] if top1.get(key) == cid else ["--map", f"{key}={cid}"]
    assert main(argv) == 0
    assert main(build + ["--platform", adapter_file(shop, str(reviewed))]) == 0
    products = pq.read_table(catalog / "products.parquet").to_pylist()
    assert len(products) == n and {p["platform"] for p in products} == {"myshop"}
    assert all(p["category_id"] == right[p["source_category"]] for p in products)

    # embedding and training on the catalogue that includes it
    enc = tmp_path / "encoders.yaml"
    enc.write_text(json.dumps({"encoders": {
        "text": {"family": "text", "weights": str(cascade["cascade"]).rsplit("/", 1)[0] + "/encoders/text",
                 "batch_size": 16, "num_cpus": 0.5, "max_tokens": 32}},
        "decode_batch_size": 16, "decode_num_cpus": 0.25, "block_rows": 32, "write_rows": 64}))
    assert main(["embed", "--config", str(enc), "--products", str(catalog / "products.parquet"),
                 "--output", str(tmp_path / "store")]) == 0
    assert main(["train", "--products", str(catalog / "products.parquet"), "--embeddings",
                 str(tmp_path / "store"), "--output", str(tmp_path / "train"),
                 "--set", "model.modalities=[text]", "--set", "model.fusion=early",
                 "--set", "model.label_prior=none", "--set", "model.lexical_prior=false",
                 "--set", "model.hidden_dim=16", "--set", "optim.epochs=2",
                 "--set", "scaling.num_workers=0"]) == 0
    result = json.loads((tmp_path / "train" / "train_result.json").read_text())
    train_rows = sum(p["split"] == "train" for p in products)
    assert result["data"]["train_rows"] == train_rows > 0

    # the export changes: the reviewed suggestions are stale for a review and for a build
    write_export(shop, extra=("Garden", "Pots"))
    capsys.readouterr()
    assert main(argv) == 2
    assert "1 new (Garden > Pots)" in capsys.readouterr().err
    assert main(build + ["--platform", adapter_file(shop, str(reviewed))]) == 2
    assert "suggested for another version of the myshop export" in capsys.readouterr().err


def test_an_export_without_its_category_column_is_a_clear_error(cascade, tmp_path, capsys):
    shop = tmp_path / "myshop"
    write_export(shop, per_category=2)
    path = shop / "export.csv"
    rows = list(csv.reader(path.open()))
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([[c for i, c in enumerate(r) if i not in (3, 4)] for r in rows])
    assert main(["catalog", "suggest-mapping", "--adapter", adapter_file(shop, None), "--model",
                 cascade["cascade"], "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no record has the category column(s) ['dept', 'aisle']" in err
    assert "['body', 'image_file', 'name', 'sku']" in err


@pytest.fixture(scope="module")
def abstain_cascade(cascade, tmp_path_factory):
    from tests.fixtures.cascade import with_abstention

    return with_abstention(cascade, tmp_path_factory.mktemp("abstain") / "cascade")


def test_bulk_scoring_and_the_python_api_answer_partial_paths(ray_session, abstain_cascade, cascade, tmp_path):
    from prodcat.cascade import abstain
    from prodcat.cascade.stage import StageRunner
    from prodcat.score import ScoreConfig, score
    from prodcat.score.parts import read_predictions

    spec, batch = abstain_cascade["spec"], abstain_cascade["batch"]
    # the Python API: the same products with and without a target
    runner = StageRunner(spec.text_model, "text", device="cpu")
    full = runner.predict_batch(batch)
    partial = runner.predict_batch(batch, abstain=spec.abstain_thresholds("text", 0.95))
    assert full["stopped_at_level"] == [None] * abstain_cascade["n"]
    depth_full = [len(p) for p in full["path"]]
    depth = [len(p) for p in partial["path"]]
    assert all(d <= f for d, f in zip(depth, depth_full)) and sum(depth) < sum(depth_full)
    for p, f, level, reason in zip(partial["path"], full["path"], partial["stopped_at_level"],
                                   partial["stop_reason"]):
        assert p == f[:len(p)] and level == len(p) - 1
        assert reason == abstain.COMPLETE if len(p) == len(f) else reason.startswith(f"level {len(p)}")
    # bulk scoring: the same, as columns
    out = tmp_path / "pred"
    score(ScoreConfig(model=abstain_cascade["folder"], input=cascade["products_uri"], output=str(out),
                      abstain_target=0.95, text_num_cpus=0.5, multimodal_num_cpus=0.5))
    table = read_predictions(str(out))
    assert table.num_rows == abstain_cascade["n"]
    levels = table["stopped_at_level"].to_pylist()
    ids = table["level_ids"].to_pylist()
    assert all(lv == len(i or []) - 1 for lv, i in zip(levels, ids))
    assert all(r for r in table["stop_reason"].to_pylist())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        spec.abstain_thresholds("text", 1.2)
