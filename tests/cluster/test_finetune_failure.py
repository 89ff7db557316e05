"""Fine-tuning on a 3-node cluster: the node of the Ray Train worker is killed mid-epoch (SIGKILL
to its raylet, object store and workers), the worker group restarts on a fresh node from the last
epoch checkpoint the controller registered, and the run ends with the same result as an
uninterrupted one (same losses per epoch, same encoder vectors within 1e-5). Recorded in
``report`` like the other failure tests."""

from __future__ import annotations

import time

import numpy as np
import pytest

from prodcat.core import storage
from prodcat.core.config import load_config
from tests.cluster.test_node_failures import Background, registered_checkpoints, wait_until
from tests.fixtures.models import build_tiny_bert
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.integration


def test_fine_tuning_resumes_from_its_checkpoint_after_its_node_dies_mid_epoch(cluster, tmp_path, report):
    from prodcat.embed.encoders import TextEncoderConfig, build_encoder
    from prodcat.train.finetune import finetune
    from prodcat.train.finetune_config import FinetuneConfig

    base = build_tiny_bert(tmp_path / "bert", hidden=128)
    products, _ = synthetic_products(2400, platforms=("alpha", "beta"), seed=3)
    storage.write_table(products, str(tmp_path / "cat/products.parquet"))

    def config(out: str) -> FinetuneConfig:
        return load_config(FinetuneConfig, None, [
            f"encoder.weights={base}", "encoder.max_tokens=32", f"data.products={tmp_path}/cat/products.parquet",
            "optim.epochs=2", "optim.batch_size=8", "optim.lr=1e-4", "optim.head_lr=1e-3",
            "optim.log_every_s=0.1", "scaling.cpus_per_worker=1", "scaling.torch_threads=1",
            "scaling.max_failures=2", f"output={out}"])

    out, marker, lines = str(tmp_path / "interrupted"), tmp_path / "registered", []
    started = time.time()
    job = Background(lambda: finetune(config(out), progress=lines.append,
                                      callbacks=[registered_checkpoints(str(marker))]))
    node, actor = cluster.node_of_actor("RayTrainWorker", timeout_s=300)
    # epoch 0's checkpoint is registered with the controller, and epoch 1 is under way
    wait_until(lambda: marker.exists() and marker.read_text().split() == ["0"], 300,
               "registered checkpoint of epoch 0", job)
    wait_until(lambda: any(line.startswith("[finetune] epoch 2/2: step") for line in lines), 300,
               "a progress line within epoch 2 (the last)", job)
    registered, last_line = marker.read_text().split(), lines[-1]
    killed_at = cluster.kill(node, f"the node of the Ray Train worker ({actor.class_name})")
    result = job.result(900)
    plain = finetune(config(str(tmp_path / "plain")), progress=None)

    assert registered == ["0"], f"the kill came after epoch 1's checkpoint ({registered})"
    assert result.resumed_after == [0], "the run did not restart from epoch 0's checkpoint"
    assert [h["epoch"] for h in result.history] == [0, 1] and plain.resumed_after == []
    for a, b in zip(result.history, plain.history):
        for key in ("train_loss", "train_accuracy", "step"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["epoch"], key)
    texts = [f"{t}. {d}" for t, d in zip(products["title"].to_pylist()[:16],
                                         products["description"].to_pylist()[:16])]
    vectors = [build_encoder(TextEncoderConfig(weights=r.encoder, max_tokens=32, device="cpu",
                                               feature_prefix="ft_")).encode_texts(texts)
               for r in (result, plain)]
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)
    report.append({"test": "fine-tuning", "killed": actor.class_name, "node": node.node_id[:12],
                   "killed_after_s": round(killed_at - started, 1),
                   "epochs_registered_at_kill": registered, "killed_during": "epoch 1 (of 0-1)",
                   "last_progress_line_before_kill": last_line,
                   "epoch_seconds": [round(h["epoch_seconds"], 2) for h in result.history],
                   "resumed_after_epoch": result.resumed_after,
                   "lost": "the part of epoch 1 done before the kill (redone, same numbers)",
                   "train_loss": [round(h["train_loss"], 6) for h in result.history],
                   "uninterrupted_train_loss": [round(h["train_loss"], 6) for h in plain.history],
                   "same_fingerprint_as_uninterrupted": result.fingerprint == plain.fingerprint,
                   "max_vector_difference": float(np.abs(vectors[0] - vectors[1]).max()),
                   "job_ended_after_kill_s": round(job.ended - killed_at, 1)})
