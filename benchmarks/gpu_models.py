"""The production encoder architectures at random weights, saved in the layouts prodcat's encoders
load (for ``benchmarks/embed_gpu.py`` on a machine that reaches no model hub).

    build_models(root, "base", texts)   # RoBERTa-base, timm ViT-B/16 (224 px), OpenCLIP ViT-B-32
    build_models(root, "tiny", texts)   # the same families, a few layers: a CPU test in seconds
    build_models(root, "base", texts, ("minilm",))   # all-MiniLM-L6-v2's shape (finetune_gpu.py)

Random weights run the same kernels at the same shapes as trained ones, so speed is
representative; the vectors mean nothing. RoBERTa's tokenizer is a byte-level BPE (RoBERTa's
algorithm and special tokens) trained on the catalogue's own texts, since the real vocabulary
cannot be fetched: it splits product texts into somewhat fewer tokens than RoBERTa's would, so
the benchmark records the mean token count it saw.
"""

from __future__ import annotations

import json
from pathlib import Path

SIZES = ("tiny", "base")


def catalog_texts(table) -> list[str]:
    """``"<title>. <description>"`` per row of a pyarrow table with those two columns: what the
    benchmarks' tokenizers are trained on."""
    return [f"{t}. {d}" for t, d in zip(table["title"].to_pylist(), table["description"].to_pylist())]


def check_tokenizer(path: Path, texts: list[str]) -> float:
    """Mean tokens per text (special tokens included) of the tokenizer saved at ``path`` on the
    first 64 ``texts``.

    Raises:
        RuntimeError: when the texts come out as special or unknown tokens only (a tokenizer
            without its vocabulary, as ``RobertaTokenizer(vocab_file=...)`` gives under
            transformers 5), which would make every text benchmark time 2-token inputs.
    """
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    sample = [t for t in texts[:64] if t.strip()] or ["a product title"]
    ids = tokenizer(sample)["input_ids"]
    special = set(tokenizer.all_special_ids)
    words = sum(1 for row in ids for i in row if i not in special)
    if words < len(ids):
        raise RuntimeError(f"the tokenizer at {path} turns texts into special tokens only "
                           f"({words / len(ids):.1f} other tokens per text; transformers "
                           f"{transformers.__version__})")
    return sum(map(len, ids)) / len(ids)


def build_tokenizer(path: Path, texts: list[str], vocab_size: int) -> Path:
    """A RoBERTa-style byte-level BPE tokenizer trained on ``texts``, saved in HF layout."""
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    path.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(path))
    # transformers 5 folds the Fast classes into RobertaTokenizer (the lent GPU machine has 5.x)
    cls = getattr(transformers, "RobertaTokenizerFast", None) or transformers.RobertaTokenizer
    # from the folder, not vocab_file=/merges_file=: transformers 5 ignores those two arguments
    # (an empty vocabulary: 2 tokens per text on the lent machine, 2026-12-04)
    cls.from_pretrained(str(path), model_max_length=512).save_pretrained(path)
    check_tokenizer(path, texts)
    return path


def build_roberta(path: Path, size: str, texts: list[str]) -> Path:
    """``RobertaModel(RobertaConfig())`` (base: 12 layers, 768 wide, 50,265 vocabulary) or a
    2-layer, 32-wide one (tiny), with :func:`build_tokenizer`."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    build_tokenizer(path, texts, vocab_size=50265 if size == "base" else 400)
    torch.manual_seed(0)
    config = RobertaConfig() if size == "base" else RobertaConfig(
        vocab_size=50265, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=514)
    RobertaModel(config).save_pretrained(path)          # safetensors by default (4.x and 5.x)
    return path


def build_minilm(path: Path, size: str, texts: list[str]) -> Path:
    """``BertModel`` shaped as all-MiniLM-L6-v2 (the fine-tuned text encoder of
    ``configs/finetune.default.yaml``: 6 layers, 384 wide, 12 heads, 30,522 vocabulary) or a
    2-layer, 32-wide one (tiny), with a WordPiece tokenizer (uncased, BERT's special tokens)
    trained on ``texts``."""
    import torch
    import transformers
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel

    path.mkdir(parents=True, exist_ok=True)
    vocab = 30522 if size == "base" else 400
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=vocab, min_frequency=2, show_progress=False)
    wordpiece.save_model(str(path))
    cls = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer
    cls.from_pretrained(str(path), do_lower_case=True, model_max_length=512).save_pretrained(path)
    check_tokenizer(path, texts)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536) if size == "base" else BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(path)
    return path


def build_vit(path: Path, size: str) -> Path:
    """timm ``vit_base_patch16_224`` (base) or a 1-block, 32-wide ViT at 224 px (tiny), in timm's
    layout (``save_for_hf``: config.json + model.safetensors)."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(0)
    kwargs = {} if size == "base" else {"embed_dim": 32, "depth": 1, "num_heads": 2}
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, **kwargs)
    save_for_hf(model, str(path), safe_serialization=True)
    return path


def build_clip(path: Path, size: str) -> Path:
    """OpenCLIP ``ViT-B-32`` (base) or a 1-layer one at 224 px (tiny) in OpenCLIP's hub layout
    (open_clip_config.json + open_clip_model.safetensors)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = open_clip.get_model_config("ViT-B-32")
    if size == "tiny":
        cfg = {"embed_dim": 16,
               "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "patch_size": 32,
                              "head_width": 16},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                            "layers": 1}}
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**cfg)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "open_clip_model.safetensors"))
    (path / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg, "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                                             "std": list(open_clip.OPENAI_DATASET_STD)}}))
    return path


def build_models(root: str | Path, size: str, texts: list[str],
                 names: tuple[str, ...] = ("text", "image", "clip")) -> dict[str, Path]:
    """``names`` (of ``text``, ``image``, ``clip``, ``minilm``) → model folder under ``root``;
    folders already complete (a ``.done`` marker) are reused.

    Raises:
        ValueError: for a size other than tiny / base, or another model name.
    """
    if size not in SIZES:
        raise ValueError(f"size {size!r}: one of {SIZES}")
    if set(names) - {"text", "image", "clip", "minilm"}:
        raise ValueError(f"models {names}: of text, image, clip, minilm")
    root = Path(root)
    builders = {"text": lambda p: build_roberta(p, size, texts), "image": lambda p: build_vit(p, size),
                "clip": lambda p: build_clip(p, size), "minilm": lambda p: build_minilm(p, size, texts)}
    out = {}
    for name in names:
        build = builders[name]
        path = root / f"{name}-{size}"
        if not (path / ".done").exists():
            build(path)
            (path / ".done").write_text("")
        out[name] = path
    return out
