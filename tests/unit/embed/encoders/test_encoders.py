"""Encoder families through the registry: tiny random models saved in their library's layout."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from prodcat.embed.encoders import (
    ImageEncoderConfig,
    JointEncoderConfig,
    TextEncoderConfig,
    build_encoder,
    encoder_class,
    list_encoders,
    resolve_weights,
    weights_sha256,
)
from prodcat.embed.encoders.base import IMAGE_STATUS, pixel_column
from tests.fixtures.models import build_tiny_clip, build_tiny_efficientnet, build_tiny_roberta, build_tiny_vit

pytestmark = pytest.mark.unit

B = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"text": build_tiny_roberta(root / "roberta"), "image": build_tiny_vit(root / "vit"),
            "joint": build_tiny_clip(root / "clip"), "cnn": build_tiny_efficientnet(root / "cnn"),
            "root": root}


def _config(family: str, path, **kw):
    cls = {"text": TextEncoderConfig, "image": ImageEncoderConfig, "joint": JointEncoderConfig}
    return cls[family](weights=str(path), **kw)


def _batch(size: int | None, n: int = B) -> dict:
    rng = np.random.default_rng(0)
    batch = {"product_id": [f"p:{i}" for i in range(n)],
             "title": ["red cotton shirt", "blue jeans", "", "mug"][:n],
             "description": ["soft and warm", None, None, "ceramic coffee mug"][:n],
             IMAGE_STATUS: np.array(["ok", "ok", "image_corrupt", "ok"][:n], dtype=object)}
    if size:
        batch[pixel_column(size)] = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    return batch


def test_registry_lists_families_and_rejects_unknown():
    assert list_encoders() == ["image", "joint", "text"]
    with pytest.raises(KeyError, match="choose one of: image, joint, text"):
        encoder_class("audio")


@pytest.mark.parametrize("family", ["text", "image", "joint"])
def test_family_contract(tiny, family):
    """Every registered family: [B, D] float32 per feature, no NaN, unit norm, deterministic."""
    enc = build_encoder(_config(family, tiny[family]))
    batch = _batch(enc.image_size)
    first, second = enc.encode(batch), enc.encode(batch)
    assert set(enc.features) == {k[len("emb_"):] for k in first if k.startswith("emb_")}
    for feature in enc.features:
        emb, status = first[f"emb_{feature}"], first[f"status_{feature}"]
        assert emb.shape == (B, enc.dim) and emb.dtype == np.float32
        assert not np.isnan(emb).any()
        ok = status == "ok"
        np.testing.assert_allclose(np.linalg.norm(emb[ok], axis=1), 1.0, rtol=1e-5)
        assert (emb[~ok] == 0).all()
        np.testing.assert_array_equal(emb, second[f"emb_{feature}"])
    assert len(enc.fingerprint.key) == 16


def test_text_fields_and_statuses(tiny):
    batch = _batch(None)
    combined = build_encoder(_config("text", tiny["text"])).encode(batch)
    assert list(combined["status_text"]) == ["ok", "ok", "no_text", "ok"]  # row 2: no text at all
    separate = build_encoder(_config("text", tiny["text"], text_fields="separate")).encode(batch)
    assert list(separate["status_title"]) == ["ok", "ok", "no_title", "ok"]
    assert list(separate["status_description"]) == ["ok", "no_description", "no_description", "ok"]
    cls = build_encoder(_config("text", tiny["text"], pooling="cls")).encode(batch)
    assert not np.allclose(cls["emb_text"], combined["emb_text"])


def test_empty_text_gets_no_text(tiny):
    batch = _batch(None, n=2)
    batch["title"], batch["description"] = ["", "shirt"], [None, ""]
    out = build_encoder(_config("text", tiny["text"])).encode(batch)
    assert list(out["status_text"]) == ["no_text", "ok"] and (out["emb_text"][0] == 0).all()


def test_image_size_from_config_or_pretrained(tiny):
    vit = build_encoder(_config("image", tiny["image"]))
    assert vit.image_size == 32                       # the saved model's pretrained input size
    vit48 = build_encoder(_config("image", tiny["image"], image_size=48))   # pos-embed resampled
    out = vit48.encode(_batch(48))
    assert out["emb_image"].shape == (B, vit.dim)
    cnn = build_encoder(_config("image", tiny["cnn"], image_size=40))
    assert cnn.encode(_batch(40))["emb_image"].shape == (B, cnn.dim)
    assert vit.fingerprint.key != vit48.fingerprint.key


def test_cpu_precision_bf16_only_where_the_cpu_computes_it(tiny, monkeypatch):
    """bf16 on the CPU: bfloat16 autocast where the CPU has bf16 instructions, float32 elsewhere;
    fp16 stays float32 on any CPU; the vectors come out float32 either way."""
    from prodcat.core import runtime

    enc = build_encoder(_config("text", tiny["text"], precision="bf16", device="cpu"))
    half = build_encoder(_config("text", tiny["text"], precision="fp16", device="cpu"))
    for native in (False, True):
        monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda native=native: native)
        assert enc.encode_texts(["shirt"]).dtype == np.float32
        assert (type(enc.autocast()).__name__ == "nullcontext") is not native
        assert type(half.autocast()).__name__ == "nullcontext"


def test_fingerprint_tracks_weights_and_settings(tiny):
    path = tiny["text"]
    a = build_encoder(_config("text", path)).fingerprint
    assert a == build_encoder(_config("text", path, batch_size=7, pool_size=3)).fingerprint
    assert a.key != build_encoder(_config("text", path, max_tokens=16)).fingerprint.key
    other = build_tiny_roberta(tiny["root"] / "roberta_seed1", seed=1)
    assert a.key != build_encoder(_config("text", other)).fingerprint.key
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    assert a.weights_sha256 == digest == weights_sha256(path)
    assert a.architecture == "transformers:RobertaModel"


def test_resolve_weights(tiny, shared):
    assert resolve_weights(str(tiny["text"])) == tiny["text"]
    assert resolve_weights("shared:models/all-MiniLM-L6-v2") == shared / "models/all-MiniLM-L6-v2"
    with pytest.raises(FileNotFoundError):
        resolve_weights(str(tiny["root"] / "absent"))
    with pytest.raises(FileNotFoundError):
        resolve_weights("shared:models/absent")


def test_offline_defaults_load_from_shared(shared):
    """The offline config's real weights: MiniLM 384-d and EfficientNet-Lite0 1280-d."""
    from prodcat.core.config import load_config
    from prodcat.core.paths import REPO_ROOT
    from prodcat.embed.pipeline import EmbedConfig

    config = load_config(EmbedConfig, REPO_ROOT / "configs/encoders.offline.yaml")
    text = build_encoder(config.encoders["text"])
    assert text.dim == 384 and text.fingerprint.weights_sha256.startswith("860248b5")
    vec = text.encode_texts(["black fleece jacket", "black fleece jacket", "ceramic mug"])
    assert vec[0] @ vec[1] > 0.999 and vec[0] @ vec[2] < 0.9
    image = build_encoder(config.encoders["image"])
    assert image.dim == 1280 and image.image_size == config.encoders["image"].image_size
    assert image.fingerprint.weights_sha256.startswith("c1258e98")


def test_feature_extractor_without_ray(tiny, tmp_path):
    """The Serve path: raw columns in (URIs or bytes), emb_/status_ out, no Ray."""
    from PIL import Image

    from prodcat.embed.extractor import FeatureExtractor

    Image.new("RGB", (60, 80), (200, 10, 10)).save(tmp_path / "a.jpg")
    extractor = FeatureExtractor({"text": _config("text", tiny["text"]),
                                  "clip": _config("joint", tiny["joint"])})
    batch = {"product_id": ["a", "b", "c"], "title": ["shirt", "mug", "jeans"],
             "description": [None, "white", ""],
             "image_uri": [str(tmp_path / "a.jpg"), None, str(tmp_path / "missing.jpg")]}
    out = extractor(batch)
    assert set(out) == {"product_id", "emb_text", "status_text", "emb_clip_text",
                        "status_clip_text", "emb_clip_image", "status_clip_image"}
    assert list(out["status_clip_image"]) == ["ok", "no_image", "image_missing"]
    raw = {**batch, "image_bytes": [(tmp_path / "a.jpg").read_bytes(), None, b"junk"]}
    del raw["image_uri"]
    out2 = extractor(raw)
    assert list(out2["status_clip_image"]) == ["ok", "no_image", "image_not_image"]
    np.testing.assert_allclose(out2["emb_clip_image"][0], out["emb_clip_image"][0], atol=1e-6)


def test_embed_config_rejects_feature_collisions(tiny):
    from prodcat.embed.pipeline import EmbedConfig

    with pytest.raises(ValueError, match="feature_prefix"):
        EmbedConfig(encoders={"a": _config("text", tiny["text"]),
                              "b": _config("text", tiny["text"])})
    ok = EmbedConfig(encoders={"a": _config("text", tiny["text"]),
                               "b": _config("text", tiny["text"], feature_prefix="b_")})
    assert ok.encoders["b"].feature_names() == {"b_text": "text"}
