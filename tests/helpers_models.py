"""Tiny randomly initialised models of each encoder family, saved in their library's standard
layout so they load through the same code as real weights (no network, a few MB, < 1 s each).

    text_dir = build_tiny_roberta(tmp_path / "roberta")   # config.json, model.safetensors, tokenizer
    image_dir = build_tiny_vit(tmp_path / "vit")          # timm: config.json + model.safetensors
    clip_dir = build_tiny_clip(tmp_path / "clip")         # open_clip_config.json + safetensors
"""

from __future__ import annotations

import json
from pathlib import Path

_CORPUS = ["red cotton shirt", "blue denim jeans for men", "leather boots", "ceramic coffee mug",
           "wooden photo frame", "kids sandals", "a soft scarf", "black fleece jacket"] * 4


def build_tiny_roberta(path: str | Path, seed: int = 0, hidden: int = 32) -> Path:
    """A 2-layer RoBERTa (hidden ``hidden``) with a byte-level BPE tokenizer, HF layout."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_CORPUS, vocab_size=300, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(path))
    tokenizer = RobertaTokenizerFast(vocab_file=str(path / "vocab.json"),
                                     merges_file=str(path / "merges.txt"), model_max_length=64)
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=2 * hidden,
                           max_position_embeddings=72, pad_token_id=tokenizer.pad_token_id)
    RobertaModel(config).save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_vit(path: str | Path, seed: int = 0, img_size: int = 32) -> Path:
    """A 1-block ViT (patch 8, width 32) in timm's layout (``save_for_hf``, safetensors)."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img_size,
                              patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0)
    save_for_hf(model, str(path), safe_serialization=True)
    return Path(path)


def build_tiny_efficientnet(path: str | Path, seed: int = 0) -> Path:
    """timm's tiny ``test_efficientnet`` in timm's layout; a CNN with a free input size."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    save_for_hf(model, str(path), safe_serialization=True)
    return Path(path)


TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def build_tiny_clip(path: str | Path, seed: int = 0) -> Path:
    """A 1-layer CLIP (32 px images, 16 tokens, D=16) in OpenCLIP's hub layout."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**TINY_CLIP_CFG)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "open_clip_model.safetensors"))
    (path / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": TINY_CLIP_CFG,
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                           "std": list(open_clip.OPENAI_DATASET_STD)}}))
    return path
