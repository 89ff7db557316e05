"""The two halves of an encoder (CPU inputs, device forward), pools and GPU fractions.

The vectors must not change with the split: forward(prepare(batch)) after a pickle round trip
(as Ray ships the inputs) equals encoding in-process; padding and row order never change a text
vector; the offline encoders (real MiniLM and EfficientNet-Lite0 weights) give what a plain
transformers / timm reference gives, with the fingerprints the existing stores carry.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from prodcat.embed.encoders import (
    ImageEncoderConfig,
    JointEncoderConfig,
    TextEncoderConfig,
    build_encoder,
)
from prodcat.embed.encoders.inputs import (
    IMAGE_STATUS,
    ImageInputs,
    input_column,
    normalize_pixels,
    pixel_column,
    token_lengths,
    transfer_precision,
)
from prodcat.embed.pools import describe_pools, gpu_fractions, pool_strategy
from tests.fixtures.models import build_tiny_clip, build_tiny_roberta, build_tiny_vit

pytestmark = pytest.mark.unit

TITLES = ["red cotton shirt", "blue denim jeans for men with a very long description to pad",
          "", "mug", "leather boots", "a soft scarf", "kids sandals", "wooden photo frame"]
DESCRIPTIONS = ["soft and warm " * 6, None, None, "ceramic coffee mug", "", "wool", None,
                "oak " * 20]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"text": build_tiny_roberta(root / "roberta"), "image": build_tiny_vit(root / "vit"),
            "joint": build_tiny_clip(root / "clip")}


def _batch(size: int | None) -> dict:
    n = len(TITLES)
    batch = {"product_id": [f"p:{i}" for i in range(n)], "title": list(TITLES),
             "description": list(DESCRIPTIONS),
             IMAGE_STATUS: np.array(["ok", "ok", "image_corrupt", "ok", "ok", "no_image", "ok", "ok"],
                                    dtype=object)}
    if size:
        rng = np.random.default_rng(0)
        batch[pixel_column(size)] = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    return batch


@pytest.mark.parametrize("family", ["text", "image", "joint"])
def test_prepared_inputs_travel_and_give_the_same_vectors(tiny, family):
    """The pipeline's path (inputs pickled to a CPU task, columns to an actor) = in-process."""
    cls = {"text": TextEncoderConfig, "image": ImageEncoderConfig, "joint": JointEncoderConfig}[family]
    extra = {"max_tokens": 24} if family == "text" else {}
    enc = build_encoder(cls(weights=str(tiny[family]), batch_size=3, **extra))
    batch = _batch(enc.image_size)
    shipped = pickle.loads(pickle.dumps(enc.inputs))      # what a Ray task receives
    inputs = shipped(batch)
    assert set(enc.inputs.columns()) <= set(inputs)
    for column in enc.inputs.columns():
        assert len(inputs[column]) == len(TITLES)
        if column.endswith("_ids"):
            assert inputs[column].dtype == np.int32
        if column.endswith("_mask"):
            assert inputs[column].dtype == np.int8 and inputs[column].shape[1] == 24  # fixed width
        if column.endswith("_pixels"):   # channels-last, float32 on the CPU
            assert inputs[column].shape[1:] == (enc.image_size, enc.image_size, 3)
            assert inputs[column].dtype == np.float32
    out, reference = enc.forward(inputs), enc.encode(batch)
    for feature in enc.features:
        np.testing.assert_array_equal(out[f"emb_{feature}"], reference[f"emb_{feature}"])
        assert list(out[f"status_{feature}"]) == list(reference[f"status_{feature}"])
        ok = out[f"status_{feature}"] == "ok"
        assert (out[f"emb_{feature}"][~ok] == 0).all() and ok.sum() >= 5


def test_padding_and_order_never_change_a_text_vector(tiny):
    """Rows sorted by length, trimmed per chunk of 3 = each text alone (no padding at all)."""
    enc = build_encoder(TextEncoderConfig(weights=str(tiny["text"]), batch_size=3, max_tokens=32))
    texts = [t or "x" for t in TITLES] + ["shirt " * 40]          # one row cut at 32 tokens
    batched = enc.encode_texts(texts)
    alone = np.concatenate([enc.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(batched, alone, atol=2e-6)
    ids, mask = enc.inputs.tokenize(texts)
    assert mask.sum(1).max() == 32 and ids.shape == (len(texts), 32)
    prepared = {input_column("text", "mask"): mask}
    assert token_lengths(prepared, ["text"]).tolist() == mask.sum(1).tolist()


def test_normalisation_matches_torch_bit_for_bit():
    """The CPU normalisation gives the bits the encoder's old on-device code gave."""
    import torch

    pixels = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    old = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    new = normalize_pixels(pixels, mean, std)                      # [B, S, S, 3]
    np.testing.assert_array_equal(new.transpose(0, 3, 1, 2), old.numpy())


def test_compact_transfer_dtypes_round_like_autocast():
    """bf16 pixels travel as int16 bits of torch's bf16 rounding, fp16 as float16."""
    import torch

    pixels = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    spec = ImageInputs("image", 8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    full = spec.normalize(pixels)
    bf16 = spec.with_precision("bf16").normalize(pixels)
    assert bf16.dtype == np.int16 and spec.precision == "fp32"
    expected = torch.from_numpy(full).to(torch.bfloat16)
    assert torch.equal(torch.from_numpy(bf16).view(torch.bfloat16), expected)
    assert spec.with_precision("fp16").normalize(pixels).dtype == np.float16
    with pytest.raises(ValueError, match="precision"):
        spec.with_precision("int8")


def test_transfer_precision_follows_where_the_forward_runs():
    gpu = TextEncoderConfig(weights="x", precision="bf16", num_gpus=0.25)
    assert transfer_precision(gpu) == "bf16"
    assert transfer_precision(gpu, device="cpu") == "fp32"            # a CPU fallback computes fp32
    assert transfer_precision(gpu.model_copy(update={"num_gpus": 0.0})) == "fp32"


def test_auto_gpu_fractions_fit_one_gpu_and_follow_cost():
    encoders = {"text": TextEncoderConfig(weights="x", num_gpus="auto", gpu_cost=130),
                "image": ImageEncoderConfig(weights="x", num_gpus="auto", gpu_cost=113),
                "clip": JointEncoderConfig(weights="x", num_gpus="auto", gpu_cost=82),
                "fixed": TextEncoderConfig(weights="x", feature_prefix="f_", num_gpus=0.5)}
    gpus = gpu_fractions(encoders, auto_gpus=1.0, cluster_gpus=1)
    assert gpus == {"text": 0.4, "image": 0.34, "clip": 0.25, "fixed": 0.5}
    assert gpus["text"] + gpus["image"] + gpus["clip"] <= 1.0
    assert gpu_fractions(encoders, auto_gpus=0.5, cluster_gpus=8)["text"] == 0.2
    no_gpu = gpu_fractions(encoders, cluster_gpus=0)
    assert no_gpu["text"] == no_gpu["clip"] == 0.0 and no_gpu["fixed"] == 0.5
    line = describe_pools(encoders, gpus)
    assert "text 1 actor(s) × 0.4 GPU" in line


def test_pool_line_says_the_precision_computed(monkeypatch):
    """The pool line names a precision other than float32, and a bf16 request a CPU without
    bf16 instructions turns into float32."""
    from prodcat.core import runtime

    encoders = {"text": TextEncoderConfig(weights="x", precision="bf16"),
                "image": ImageEncoderConfig(weights="x", precision="fp16", num_gpus=0.5),
                "plain": TextEncoderConfig(weights="x", feature_prefix="p_")}
    gpus = {"text": 0.0, "image": 0.5, "plain": 0.0}
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: True)
    line = describe_pools(encoders, gpus)
    assert "text 1 actor(s) × 1 CPU, bf16" in line and "image 1 actor(s) × 0.5 GPU, fp16" in line
    assert line.endswith("plain 1 actor(s) × 1 CPU")
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: False)
    assert "text 1 actor(s) × 1 CPU, fp32 (this CPU has no bf16 instructions)" in describe_pools(encoders, gpus)
    assert "image 1 actor(s) × 1 CPU, fp32 (fp16 runs on GPUs only)" in describe_pools(encoders, {**gpus, "image": 0.0})


def test_pool_config_is_checked():
    with pytest.raises(ValueError, match="max_pool_size"):
        TextEncoderConfig(weights="x", pool_size=3, max_pool_size=2)
    with pytest.raises(ValueError, match="gpu_cost"):
        TextEncoderConfig(weights="x", num_gpus="auto")
    with pytest.raises(ValueError, match="whole number"):
        TextEncoderConfig(weights="x", num_gpus=1.5)
    strategy = pool_strategy(TextEncoderConfig(weights="x", pool_size=1, max_pool_size=4), 0.4)
    assert (strategy.min_size, strategy.max_size, strategy.max_concurrent_calls_per_actor) == (1, 4, 2)
    cpu = pool_strategy(TextEncoderConfig(weights="x", pool_size=2), 0.0)
    assert (cpu.min_size, cpu.max_size, cpu.max_concurrent_calls_per_actor) == (2, 2, None)


def test_memory_per_actor_is_reserved_and_a_cluster_too_small_for_the_pools_is_refused():
    """``memory_gib``: Ray reserves it per actor (the pool line says so); when the pools'
    minimum sizes together reserve more than the cluster offers, ``plan_pools`` refuses before
    Ray would wait for them without end; without ``memory_gib`` nothing is checked."""
    from prodcat.embed.pipeline import EmbedConfig, plan_pools

    config = EmbedConfig(encoders={"text": TextEncoderConfig(weights="x", memory_gib=2.0),
                                   "image": ImageEncoderConfig(weights="x", pool_size=2, memory_gib=2.5)})
    assert "text 1 actor(s) × 1 CPU, 2 GiB" in describe_pools(config.encoders, {"text": 0.0, "image": 0.0})
    with pytest.raises(ValueError, match=r"reserve 7.0 GiB \(text 1 × 2 GiB, image 2 × 2.5 GiB\) but the Ray "
                                         r"cluster offers 6.0 GiB"):
        plan_pools(config, {}, 0.0, lambda _m: None, memory_available_gib=6.0)   # refused before inputs are read
    unreserved = EmbedConfig(encoders={"text": TextEncoderConfig(weights="x")})
    assert unreserved.encoders["text"].memory_gib is None
    with pytest.raises(ValueError, match="greater than 0"):
        TextEncoderConfig(weights="x", memory_gib=0)


def test_production_config_starts_on_one_gpu_and_spreads():
    """configs/encoders.production.yaml: one actor of each fits one GPU; pools grow with GPUs."""
    from prodcat.core.config import load_config
    from prodcat.core.paths import REPO_ROOT
    from prodcat.embed.pipeline import EmbedConfig

    config = load_config(EmbedConfig, REPO_ROOT / "configs/encoders.production.yaml")
    gpus = gpu_fractions(config.encoders, config.auto_gpus, cluster_gpus=1)
    assert 0.9 <= sum(gpus[n] * config.encoders[n].pool_size for n in gpus) <= 1.0
    assert all(enc.max_pool_size and enc.max_pool_size >= 8 for enc in config.encoders.values())
    assert all(v == 0 for v in gpu_fractions(config.encoders, config.auto_gpus, 0).values())


def test_offline_encoders_match_a_plain_reference(shared):
    """The offline config's real encoders = plain transformers / timm code (the pre-split
    semantics: per-batch padding, mean pooling; pixels / 255, normalised), and the fingerprints
    of the stores made before the split (benchmarks/README.md: text d7e6e919bbc4665c) and of the
    image at 224 px since stop 46 (aefcc1854cecde2d; at 96 px it was ec7443f56b9fb5ab). The
    config asks for bf16: at fp32 they equal the reference; at bf16 (on a CPU with bf16
    instructions) they stay within a cosine of 0.995 (text) and 0.99 (image) of it, under the
    same fingerprint."""
    import timm
    import torch
    from transformers import AutoModel, AutoTokenizer

    from prodcat.core.config import load_config
    from prodcat.core.paths import REPO_ROOT
    from prodcat.core.runtime import cpu_computes_bf16
    from prodcat.embed.pipeline import EmbedConfig

    config = load_config(EmbedConfig, REPO_ROOT / "configs/encoders.offline.yaml",
                         ["encoders.text.device=cpu", "encoders.image.device=cpu"])
    assert {enc.precision for enc in config.encoders.values()} == {"bf16"}
    fp32 = {name: enc.model_copy(update={"precision": "fp32"}) for name, enc in config.encoders.items()}
    text = build_encoder(fp32["text"].model_copy(update={"batch_size": 4}))
    assert text.fingerprint.key == "d7e6e919bbc4665c"
    texts = [t or d or "mug" for t, d in zip(TITLES, DESCRIPTIONS)] + ["jacket " * 100]
    path = shared / "models/all-MiniLM-L6-v2"
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    enc = tok(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    reference = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(text.encode_texts(texts), reference, atol=2e-6)
    text16 = build_encoder(config.encoders["text"].model_copy(update={"batch_size": 4}))
    assert text16.fingerprint.key == text.fingerprint.key
    cosines = (text16.encode_texts(texts) * reference).sum(1)
    assert cosines.min() > 0.995
    if cpu_computes_bf16():                       # the forward really ran in bf16
        assert not np.allclose(text16.encode_texts(texts), reference, atol=2e-6)

    image = build_encoder(fp32["image"])
    assert image.fingerprint.key == "aefcc1854cecde2d"
    pixels = _batch(224)[pixel_column(224)]
    net = timm.create_model(f"local-dir:{shared / 'models/tf_efficientnet_lite0'}", pretrained=True,
                            num_classes=0).eval()
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - torch.tensor(image.mean).view(1, 3, 1, 1)) / torch.tensor(image.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(net(x), dim=-1).numpy()
    np.testing.assert_array_equal(image.encode_pixels(pixels), reference)
    image16 = build_encoder(config.encoders["image"])
    assert image16.fingerprint.key == image.fingerprint.key
    assert (image16.encode_pixels(pixels) * reference).sum(1).min() > 0.99


def test_shipped_tokenizer_gives_the_transformers_ids(tiny):
    """CPU tasks tokenize with the configured Rust tokenizer: the ids and masks transformers
    gives, and no torch import is needed for it."""
    enc = build_encoder(TextEncoderConfig(weights=str(tiny["text"]), max_tokens=12))
    texts = ["red cotton shirt", "blue denim jeans for men " * 5, "mug"]
    shipped = pickle.loads(pickle.dumps(enc.inputs))
    assert shipped.backend() and "_serialized" in shipped.__dict__
    ids, mask = shipped.tokenize(texts)
    ref = enc.tokenizer(texts, truncation=True, max_length=12, padding="max_length", return_tensors="np")
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])
    assert mask[1].all() and mask[2].sum() < 12                 # truncated, padded
