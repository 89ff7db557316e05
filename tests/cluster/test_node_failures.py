"""Worker nodes killed mid-job on a 3-node cluster: bulk scoring, embedding and training finish
with nothing lost or duplicated. Each test records what was killed, when, what was lost and how
long recovery took (``report``; ``PRODCAT_CLUSTER_REPORT=<file>`` writes it out)."""

from __future__ import annotations

import glob
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from prodcat.core import storage
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.integration


class Background:
    """Run ``fn`` in a thread; ``result()`` returns its value or raises its exception."""

    def __init__(self, fn) -> None:
        self.value, self.error, self.ended = None, None, None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn) -> None:
        try:
            self.value = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            self.error = err
        self.ended = time.time()

    def result(self, timeout: float):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.value


def wait_until(condition, timeout_s: float, what: str, job: Background | None = None) -> float:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return time.time()
        if job is not None and not job.thread.is_alive():
            job.result(0)
            raise AssertionError(f"the job ended before {what}")
        time.sleep(0.05)
    raise TimeoutError(f"no {what} within {timeout_s} s")


def test_bulk_scoring_survives_its_worker_node_killed(cluster, cascade, tmp_path, report):
    from prodcat.score import ScoreConfig, score
    from prodcat.score.parts import done_rows, list_parts, read_predictions

    products, _ = synthetic_products(720, image_dir=tmp_path / "images", seed=7)
    src, out = tmp_path / "products.parquet", tmp_path / "pred"
    pq.write_table(products, src)
    config = ScoreConfig(model=cascade["cascade"], input=str(src), output=str(out),
                         text_batch_size=16, multimodal_batch_size=16, block_rows=16,
                         rows_per_file=48, text_num_cpus=0.5, multimodal_num_cpus=0.5, device="cpu")
    started = time.time()
    job = Background(lambda: score(config, log=lambda _: None))
    wait_until(lambda: len(list_parts(str(out))) >= 2, 300, "scored part", job)
    node, actor = cluster.node_of_actor("MapWorker")
    written_before = len(done_rows(str(out)))
    killed_at = cluster.kill(node, f"the node of bulk scoring's actor {actor.class_name}")
    parts_before = len(list_parts(str(out)))
    resumed_at = wait_until(lambda: len(list_parts(str(out))) > parts_before, 300, "part after the kill", job)
    summary = job.result(600)

    table = read_predictions(str(out))
    rows = np.sort(done_rows(str(out)))
    assert summary["complete"] and summary["rows"] == products.num_rows
    assert table.num_rows == products.num_rows                             # rows in = rows out
    assert rows.tolist() == list(range(products.num_rows))                 # each exactly once
    assert sorted(table["product_id"].to_pylist()) == sorted(products["product_id"].to_pylist())
    assert table["error"].null_count == table.num_rows and summary["escalated"] > 0
    # Prometheus on the nodes' metrics endpoints: the driver counts each part it writes
    assert cluster.wait_metric("ray_prodcat_score_rows_total", products.num_rows) >= products.num_rows
    report.append({"test": "bulk scoring", "killed": actor.class_name, "node": node.node_id[:12],
                   "killed_after_s": round(killed_at - started, 1), "rows_written_before_kill": written_before,
                   "rows": products.num_rows, "rows_out": table.num_rows, "lost": 0, "duplicated": 0,
                   "next_part_after_kill_s": resumed_at and round(resumed_at - killed_at, 1),
                   "job_ended_after_kill_s": round(job.ended - killed_at, 1)})


def test_embedding_survives_the_node_of_an_encoder_actor_killed(cluster, tmp_path, report):
    from prodcat.embed.encoders import ImageEncoderConfig, TextEncoderConfig
    from prodcat.embed.pipeline import EmbedConfig, run_embedding
    from prodcat.embed.store import read_store
    from tests.fixtures.models import build_tiny_efficientnet, build_tiny_roberta

    # enough products that the job is still running when its first parts are written (the
    # CPU/GPU split made the tiny encoders fast: 600 products were done before a kill)
    products, _ = synthetic_products(1800, image_dir=tmp_path / "images", seed=11)
    src, store = tmp_path / "products.parquet", tmp_path / "store"
    pq.write_table(products, src)
    encoders = {
        "text": TextEncoderConfig(weights=str(build_tiny_roberta(tmp_path / "roberta")), max_tokens=32,
                                  device="cpu", batch_size=16, num_cpus=0.5, pool_size=1),
        "image": ImageEncoderConfig(weights=str(build_tiny_efficientnet(tmp_path / "effnet")),
                                    image_size=224, device="cpu", batch_size=16, num_cpus=0.5, pool_size=1)}
    config = EmbedConfig(products=str(src), output=str(store), encoders=encoders, block_rows=16,
                         write_rows=48, decode_batch_size=16)
    started = time.time()
    job = Background(lambda: run_embedding(config, log=lambda _: None))
    parts = lambda: glob.glob(str(store / "part-*.parquet"))  # noqa: E731
    # kill the node of an encoder actor while it encodes: once the pool is up and a few seconds
    # of batches went through it (parts are written behind the encoders, so waiting for parts
    # could let the encoding finish first)
    node, actor = cluster.node_of_actor("MapWorker", timeout_s=300)
    time.sleep(3)
    assert job.ended is None, f"the job ended before the kill: {job.error!r} {job.value}"
    before = sum(pq.read_metadata(p).num_rows for p in parts())
    killed_at = cluster.kill(node, f"the node of embedding's encoder actor {actor.class_name}")
    count = len(parts())
    summary = job.result(600)
    after = sorted(os.path.getmtime(p) for p in parts())
    resumed_at = next((t for t in after if t > killed_at), None) if len(after) > count else None

    ids = [i for p in sorted(parts()) for i in pq.read_table(p, columns=["product_id"])["product_id"].to_pylist()]
    assert len(ids) == len(set(ids)), "a product was written twice"          # no duplicate
    assert sorted(ids) == sorted(products["product_id"].to_pylist())       # none missing
    table, _ = read_store(str(store))
    assert table.num_rows == products.num_rows and summary["embedded"] == products.num_rows
    assert set(table["status_text"].to_pylist()) == {"ok"}
    report.append({"test": "embedding", "killed": actor.class_name, "node": node.node_id[:12],
                   "killed_after_s": round(killed_at - started, 1), "products_stored_before_kill": before,
                   "products": products.num_rows, "stored": len(ids), "lost": 0, "duplicated": 0,
                   "next_part_after_kill_s": resumed_at and round(resumed_at - killed_at, 1),
                   "job_ended_after_kill_s": round(job.ended - killed_at, 1)})


def registered_checkpoints(path: str):
    """A Ray Train callback (it runs in the controller, after the checkpoint manager) that appends
    the epoch of each checkpoint the controller registered to ``path``; defined in a function so
    it travels by value."""
    from ray.train import UserCallback

    class Registered(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if checkpoint is not None:
                with open(path, "a") as f:
                    f.write(f"{metrics[0].get('epoch')}\n")

    return Registered()


def test_training_resumes_from_its_checkpoint_after_its_node_dies(cluster, tmp_path, report):
    from prodcat.core.config import load_config
    from prodcat.train.config import TrainConfig
    from prodcat.train.trainer import train
    from tests.fixtures.store import write_synthetic_store

    products, taxonomy = synthetic_products(400, platforms=("alpha", "beta"), seed=5)
    storage.write_table(products, str(tmp_path / "cat/products.parquet"))
    storage.write_text(str(tmp_path / "cat/taxonomy.json"), taxonomy.to_json())
    write_synthetic_store(products, taxonomy, str(tmp_path / "emb"), dims={"text": 16, "image": 8})

    def config(out: str, *extra: str) -> TrainConfig:
        return load_config(TrainConfig, None, [
            f"data.products={tmp_path}/cat/products.parquet", f"data.embeddings={tmp_path}/emb",
            "model.preset=null", "model.modalities=[text,image]", "model.hidden_dim=32", "optim.epochs=3",
            "optim.patience=3", "optim.batch_size=32", "scaling.cpus_per_worker=0.5",
            "scaling.torch_threads=1", "scaling.max_failures=2", f"output={out}", *extra])

    out, marker = str(tmp_path / "interrupted"), tmp_path / "registered"
    started = time.time()
    job = Background(lambda: train(config(out), callbacks=[registered_checkpoints(str(marker))],
                                   progress=None))
    checkpoints = lambda: glob.glob(f"{out}/ray/train/checkpoint_*/train_state.json")  # noqa: E731
    # a checkpoint the Train controller has registered (what a restarted worker group gets)
    wait_until(lambda: marker.exists() and marker.read_text().strip(), 300, "registered checkpoint", job)
    registered = marker.read_text().split()
    node, actor = cluster.node_of_actor("RayTrainWorker")
    on_disk = len(checkpoints())
    killed_at = cluster.kill(node, f"the node of the Ray Train worker ({actor.class_name})")
    resumed_at = wait_until(lambda: len(checkpoints()) > on_disk, 300, "checkpoint after the kill", job)
    result = job.result(600)
    plain = train(config(str(tmp_path / "plain"), "scaling.num_workers=0"), progress=None)

    assert result.resumed_after, "training did not restart from a checkpoint"
    assert [h["epoch"] for h in result.history] == list(range(3))
    for a, b in zip(result.history, plain.history):
        for key in ("train_loss", "val_loss", "val_hF"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["epoch"], key)
    resumed = [Path(p).parent.name for p in checkpoints()]
    report.append({"test": "training", "killed": actor.class_name, "node": node.node_id[:12],
                   "killed_after_s": round(killed_at - started, 1),
                   "epoch_checkpoints_in_storage_at_kill": on_disk,
                   "epochs_registered_at_kill": registered,
                   "resumed_after_epoch": result.resumed_after, "epochs": len(result.history),
                   "lost": "the epochs after the last checkpoint the controller had registered "
                           "(redone, same numbers)",
                   "next_checkpoint_after_kill_s": round(resumed_at - killed_at, 1),
                   "val_hF": round(result.metrics["val_hF"], 6),
                   "uninterrupted_val_hF": round(plain.metrics["val_hF"], 6),
                   "job_ended_after_kill_s": round(job.ended - killed_at, 1),
                   "checkpoints_kept": len(resumed)})
