"""Does fine-tuning the text encoder help across platforms? A quick indication, per held-out
platform P (a leave-one-platform-out fold), on a catalogue and its embedding store:

1. ``prodcat finetune`` on the other platforms' training rows (``finetune(config)``; products/s);
2. a copy of the store gets the fine-tuned feature (``run_embedding`` with ``<run>/encoder.yaml``:
   the path that adds an encoder to an existing store; products/s);
3. a logistic regression (sklearn, C below) on the frozen ``text`` vectors and one on the
   fine-tuned ``ft_text`` vectors, trained on the rows the fine-tuning saw, and the fine-tuned
   model's own linear head, scored on P's labelled products whose category the training
   platforms have: accuracy, strict hF (``prodcat.core.metrics.hierarchical_prf``) and a paired
   bootstrap interval of the hF difference over products (not over groups: an indication).

    python benchmarks/finetune_lopo.py --products runs/sample/catalog/products.parquet \\
        --store runs/sample/embeddings --heldout hm myntra --output runs/finetune_lopo

Writes ``<output>/<P>/finetune_check.json`` and ``<output>/finetune_lopo.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prodcat.core import storage  # noqa: E402
from prodcat.core.config import load_config  # noqa: E402
from prodcat.core.metrics import hierarchical_prf  # noqa: E402
from prodcat.embed.pipeline import EmbedConfig, run_embedding  # noqa: E402
from prodcat.embed.store import read_vectors  # noqa: E402
from prodcat.train.features import load_taxonomy  # noqa: E402
from prodcat.train.finetune import finetune, training_rows  # noqa: E402
from prodcat.train.finetune_config import FinetuneConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fit_predict(x_train, y_train, x_test, c: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=3000)
    model.fit(x_train, y_train)
    return model.predict(x_test)


def head_predict(run: str, x: np.ndarray) -> np.ndarray:
    """Category ids the fine-tuned model's own head gives the stored (normalised) vectors."""
    from safetensors.numpy import load_file

    head = load_file(os.path.join(run, "head", "head.safetensors"))
    meta = json.loads(Path(run, "head", "head.json").read_text())
    logits = (x * meta["logit_scale"]) @ head["weight"].T + head["bias"]
    return np.asarray(meta["labels"])[logits.argmax(1)]


def scores(taxonomy, truth: np.ndarray, pred: np.ndarray) -> tuple[dict, np.ndarray]:
    true_nodes = np.array([taxonomy.label_node(int(c)) for c in truth])
    pred_nodes = np.array([taxonomy.label_node(int(c)) for c in pred])
    from prodcat.core.metrics import hierarchical_counts

    counts = hierarchical_counts(taxonomy, true_nodes, pred_nodes)
    return ({"accuracy": float(np.mean(truth == pred)),
             "hF": hierarchical_prf(taxonomy, true_nodes, pred_nodes)["hF"]}, counts)


def paired_interval(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile interval of hF(b) - hF(a) (points) over product resamples."""
    rng = np.random.default_rng(seed)

    def hf(c):
        p, r = c[:, 0].sum() / c[:, 1].sum(), c[:, 0].sum() / c[:, 2].sum()
        return 2 * p * r / (p + r)

    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(a), len(a))
        diffs.append(100 * (hf(b[i]) - hf(a[i])))
    return [round(float(np.percentile(diffs, 2.5)), 2), round(float(np.percentile(diffs, 97.5)), 2)]


def one_fold(args, heldout: str, platforms: list[str]) -> dict:
    out = os.path.join(args.output, heldout)
    train_on = [p for p in platforms if p != heldout]
    config = load_config(FinetuneConfig, str(REPO / "configs/finetune.default.yaml"), [
        f"data.products={args.products}", f"data.platforms=[{','.join(train_on)}]",
        f"data.max_train_products={args.max_train or 'null'}", f"optim.epochs={args.epochs}",
        f"encoder.max_tokens={args.max_tokens}", f"output={out}", f"name=lopo_{heldout}"])
    load_before = load_avg()
    result = finetune(config)
    load_after = load_avg()
    store = os.path.join(out, "embeddings")
    if not os.path.exists(store):
        shutil.copytree(args.store, store)
    taxonomy = load_taxonomy(args.products)
    table = storage.read_table(args.products, columns=["product_id", "platform", "category_id"])
    train = training_rows(config)
    train_ids = train["product_id"].to_pylist()
    y_train = np.asarray(train["category_id"].to_pylist())
    labels = set(y_train.tolist())
    test = [(p, c) for p, pl, c in zip(table["product_id"].to_pylist(), table["platform"].to_pylist(),
                                       table["category_id"].to_pylist())
            if pl == heldout and c is not None and c in labels]
    test_ids, y_test = [p for p, _ in test], np.asarray([c for _, c in test])
    embed = load_config(EmbedConfig, result.snippet, {"products": args.products, "output": store})
    embed_load = load_avg()
    summary = run_embedding(embed, product_ids=train_ids + test_ids)   # only the fold's rows
    rows, counts = {}, {}
    for name, feature in (("frozen MiniLM + LR", "text"), ("fine-tuned MiniLM + LR", "ft_text")):
        _, x_train, ok_train = read_vectors(store, feature, train_ids)
        _, x_test, _ = read_vectors(store, feature, test_ids)
        pred = fit_predict(x_train[ok_train], y_train[ok_train], x_test, args.c)
        rows[name], counts[name] = scores(taxonomy, y_test, pred)
    _, x_test, _ = read_vectors(store, "ft_text", test_ids)
    rows["fine-tuned MiniLM, its own head"], counts["head"] = scores(
        taxonomy, y_test, head_predict(out, x_test))
    diff = paired_interval(counts["frozen MiniLM + LR"], counts["fine-tuned MiniLM + LR"])
    record = {"heldout": heldout, "trained_on": train_on, "train_products": result.train_products,
              "labels": result.labels, "test_products": len(test_ids),
              "test_products_outside_label_space": sum(
                  1 for pl, c in zip(table["platform"].to_pylist(), table["category_id"].to_pylist())
                  if pl == heldout and c is not None and c not in labels),
              "epochs": args.epochs, "max_tokens": args.max_tokens, "lr_C": args.c,
              "finetune": {"products_per_s": result.products_per_s, "seconds": result.seconds,
                           "epoch_seconds": [round(h["epoch_seconds"], 1) for h in result.history],
                           "train_loss": [round(h["train_loss"], 4) for h in result.history],
                           "load_before": load_before, "load_after": load_after,
                           "fingerprint": result.fingerprint},
              "embed_ft": {"products": summary["embedded"], "products_per_s": summary["products_per_s"],
                           "load_before": embed_load, "load_after": load_avg()},
              "scores": rows, "hF_gain_points_95": diff}
    Path(out, "finetune_check.json").write_text(json.dumps(record, indent=2))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", required=True)
    parser.add_argument("--store", required=True, help="embedding store with the frozen 'text' feature")
    parser.add_argument("--heldout", nargs="+", required=True)
    parser.add_argument("--output", default="runs/finetune_lopo")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-train", type=int, default=None, help="subsample of training rows")
    parser.add_argument("--c", type=float, default=10.0, help="inverse regularisation of the LRs")
    args = parser.parse_args(argv)
    platforms = sorted(set(storage.read_table(args.products, columns=["platform"])["platform"].to_pylist()))
    start = time.time()
    records = [one_fold(args, p, platforms) for p in args.heldout]
    Path(args.output, "finetune_lopo.json").write_text(json.dumps(
        {"folds": records, "seconds": round(time.time() - start, 1)}, indent=2))
    for r in records:
        print(f"held out {r['heldout']} ({r['test_products']} products; trained on "
              f"{r['train_products']}): " + "; ".join(
                  f"{k} hF {v['hF']:.3f} acc {v['accuracy']:.3f}" for k, v in r["scores"].items())
              + f"; LR gain {r['hF_gain_points_95']} hF points; fine-tuning "
              f"{r['finetune']['products_per_s']} products/s (load {r['finetune']['load_before']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
