"""The sweep's terminal lines: one per ended trial (values, validation hF, why it ended), the
progress with an ETA and the best so far; the callback survives being saved with the sweep."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from prodcat.tune.progress import SweepProgress
from prodcat.tune.results import describe

pytestmark = pytest.mark.unit

KEYS = ["model.fusion", "model.masking", "model.modalities", "model.hidden_dim", "optim.lr"]


def _trial(trial_id, status, epoch=None, best=None, best_epoch=None, **config):
    last = {} if epoch is None else {"epoch": epoch, "val_hF": best, "best_val_hF": best,
                                     "best_epoch": best_epoch, "time_total_s": 83.0}
    config = {"model.fusion": "early", "model.masking": "hard", "model.modalities": ["text", "image"],
              "model.hidden_dim": 256, "optim.lr": 0.0012, **config}
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=last, config=config)


def _callback(lines):
    callback = SweepProgress(total=4, keys=KEYS, base_epochs=12, base_patience=4, rungs={2, 4, 8})
    callback.log = lines.append
    return callback


def test_describe_names_values_in_a_few_words():
    assert describe({"model.fusion": "late", "model.modalities": ["text", "image"],
                     "model.label_prior": "paths", "model.hidden_dim": 128, "optim.lr": 3.1e-4,
                     "model.dropout": 0.2512, "model.level_weights": None}) == (
        "late, text+image, prior paths, h128, lr 3.1e-04, dropout 0.251, level weights default")


def test_a_line_per_ended_trial_with_why_and_the_progress():
    lines: list[str] = []
    callback = _callback(lines)
    stopped = _trial("a1", "TERMINATED", epoch=3, best=0.61234, best_epoch=2)      # 4 epochs: rung
    running = _trial("b2", "RUNNING", epoch=1, best=0.7, best_epoch=1)
    callback.on_trial_complete(0, [stopped, running, _trial("c3", "PENDING")], stopped)
    assert lines[0] == ("[tune] trial 1/4 a1 early, hard, text+image, h256, lr 1.2e-03: val hF 0.6123 "
                        "(epoch 3 of 4), stopped by ASHA at epoch 4, 1:23")
    assert lines[1].startswith("[tune] 1/4 trials ended (1 running), 0:00 elapsed, ETA ")
    assert lines[1].endswith("; best so far 0.7000 (trial b2)")
    patience = _trial("b2", "TERMINATED", epoch=6, best=0.7, best_epoch=1)         # 5 bad epochs
    callback.on_trial_complete(0, [stopped, patience], patience)
    assert "early stopping at epoch 7" in lines[2] and lines[2].startswith("[tune] trial 2/4 b2 ")
    done = _trial("c3", "TERMINATED", epoch=7, best=0.5, best_epoch=7, **{"optim.epochs": 8})
    callback.on_trial_complete(0, [stopped, patience, done], done)
    assert "completed 8 epochs" in lines[4]
    failed = _trial("d4", "ERROR")
    failed.error_msg = "Traceback ...\nRuntimeError: out of memory"
    callback.on_trial_error(0, [stopped, patience, done, failed], failed)
    assert lines[6] == ("[tune] trial 4/4 d4 early, hard, text+image, h256, lr 1.2e-03: no score, "
                        "failed: RuntimeError: out of memory")
    assert lines[7].startswith("[tune] 4/4 trials ended (0 running)") and "ETA" not in lines[7]


def test_a_heartbeat_while_nothing_ends_and_settings_survive_pickling():
    lines: list[str] = []
    callback = _callback(lines)
    callback.heartbeat_s = 0.0
    callback.on_step_end(0, [_trial("a1", "RUNNING")])
    assert lines == ["[tune] 0/4 trials ended (1 running), 0:00 elapsed"]
    again = pickle.loads(pickle.dumps(callback))
    assert (again.total, again.keys, again.rungs, again.heartbeat_s) == (4, KEYS, {2, 4, 8}, 0.0)
