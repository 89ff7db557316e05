"""The training stage's epoch lines survive their queue's actor dying (issue 22: a killed worker
node took the queue with it, the next epoch's ``put`` failed the training workers, and the
driver's drain raised at the end of ``fit()``)."""

from __future__ import annotations

import time

import pytest

from prodcat.train.config import TrainConfig
from prodcat.train.loop import _announce
from prodcat.train.trainer import EpochLines

pytestmark = pytest.mark.integration

EPOCH = {"epoch": 0, "train_loss": 1.0, "val_loss": 1.1, "val_hF": 0.5, "val_path_consistency": 1.0,
         "best_val_hF": 0.5, "best_epoch": 0, "epoch_seconds": 0.1}


def test_epoch_lines_go_on_after_their_queue_actor_died(ray_session):
    import ray

    lines: list[str] = []
    config = TrainConfig(name="t")
    lines_cm = EpochLines(config, lines.append)
    queue = lines_cm.__enter__()
    _announce({"progress": queue}, EPOCH)
    deadline = time.time() + 30
    while not lines and time.time() < deadline:
        time.sleep(0.1)
    assert lines and "epoch 1/" in lines[0]
    ray.kill(queue.actor, no_restart=True)            # as when its node is killed
    time.sleep(1)
    _announce({"progress": queue}, dict(EPOCH, epoch=1))   # a worker's next epoch: no error
    lines_cm.__exit__(None, None, None)               # the driver's end of fit(): no error
    assert len(lines) == 1
