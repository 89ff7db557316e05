"""A tiny but real cascade for tests: tiny encoders saved in their libraries' layouts, two
checkpoints written through ``prodcat.checkpoint.save_checkpoint`` (text-only and text + image),
their heads fitted for a few steps on synthetic products so predictions carry signal, and a
``cascade.json`` — built in a few seconds, no network, nothing from ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers_models import build_tiny_efficientnet, build_tiny_roberta


def build_tiny_cascade(root: str | Path, n_products: int = 84, threshold: float | None = None,
                       steps: int = 60) -> dict:
    """Write ``root/{encoders,text_model,multimodal_model,images,cascade.json}``.

    Returns:
        ``{"cascade", "text_model", "multimodal_model", "products" (pyarrow table),
        "taxonomy", "image_dir"}``; tau defaults to the median stage-1 confidence of the
        products, so about half of them escalate.
    """
    import torch

    from prodcat.cascade import CascadeSpec
    from prodcat.checkpoint import save_checkpoint
    from prodcat.embedding import FeatureExtractor
    from prodcat.encoders import ImageEncoderConfig, TextEncoderConfig
    from prodcat.models import HierarchicalClassifier, ModelConfig, hierarchical_loss
    from prodcat.stage import StageRunner, write_cascade
    from prodcat.synthetic import synthetic_products
    from prodcat.training import TrainConfig

    root = Path(root)
    products, taxonomy = synthetic_products(n_products, image_dir=root / "images")
    encoders = {
        "minitext": TextEncoderConfig(weights=str(build_tiny_roberta(root / "encoders/text")),
                                      max_tokens=32, device="cpu"),
        "miniimage": ImageEncoderConfig(weights=str(build_tiny_efficientnet(root / "encoders/image")),
                                        image_size=32, device="cpu"),
    }
    extractor = FeatureExtractor(encoders)
    described = extractor.describe()
    batch = {k: products[k].to_pylist() for k in ("product_id", "title", "description", "image_uri")}
    out = extractor(batch)
    # the catalogue and embedding store the checkpoints are "trained on" (for `cascade fit`)
    import pyarrow.parquet as pq

    from prodcat.embedding import make_manifest, prepare_store, to_store_table, write_part

    (root / "catalog").mkdir(parents=True, exist_ok=True)
    pq.write_table(products, root / "catalog/products.parquet")
    (root / "catalog/taxonomy.json").write_text(taxonomy.to_json())
    manifest = make_manifest(described)
    prepare_store(str(root / "embeddings"), manifest)
    write_part(to_store_table(out, manifest), str(root / "embeddings"), "test")
    targets = torch.as_tensor(np.stack([taxonomy.targets(taxonomy.label_node(c))
                                        for c in products["category_id"].to_pylist()]))
    paths = {}
    for name, modalities in (("text_model", ["text"]), ("multimodal_model", ["text", "image"])):
        config = TrainConfig(model=ModelConfig(modalities=modalities, fusion="early", hidden_dim=32,
                                               dropout=0.0))
        dims = {f: described[f]["dim"] for f in modalities}
        torch.manual_seed(0)
        model = HierarchicalClassifier(config.model, taxonomy, dims)
        x = {f: torch.as_tensor(out[f"emb_{f}"]) for f in modalities}
        present = {f: torch.as_tensor(np.asarray(out[f"status_{f}"]) == "ok") for f in modalities}
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(steps):
            loss = hierarchical_loss(model(x, present, targets), targets, model.level_weights)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        paths[name] = save_checkpoint(
            str(root / name), model=model, config=config, taxonomy=taxonomy, input_dims=dims,
            encoders={f: described[f] for f in modalities}, metrics={"val_hF": 0.0},
            calibration={"temperature": 1.0, "threshold": 0.5})
    if threshold is None:
        runner = StageRunner(paths["text_model"], "text", device="cpu")
        conf = runner.predict_batch(batch)["confidence"]
        threshold = float(np.median(conf))
    spec = CascadeSpec(paths["text_model"], paths["multimodal_model"], threshold,
                       goal={"kind": "test: median confidence"})
    return {"cascade": write_cascade(spec, str(root)), **paths, "products": products,
            "products_uri": str(root / "catalog/products.parquet"),
            "embeddings": str(root / "embeddings"),
            "taxonomy": taxonomy, "image_dir": root / "images", "threshold": threshold}
