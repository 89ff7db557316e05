"""What a person sees while a sweep runs: one line per trial that ends, progress with an ETA and
the best so far, as the main job prints its stages; Ray Tune's own status tables go to the log.

    [tune] trial 3/24 1a2b3c4d early, hard, text+image, h256, lr 1.2e-03: val hF 0.6123 (epoch 4 of 12), stopped by ASHA at epoch 4, 1:23
    [tune] 3/24 trials ended (2 running), 4:56 elapsed, ETA 0:31:00; best so far 0.6532 (trial 5e6f7a8b)

:class:`SweepProgress` is a Ray Tune callback (saved with the sweep for ``--resume``: its
settings only; counts are read from Tune's trials, so a resumed sweep counts from where it is).
"""

from __future__ import annotations

import time

from ray.tune import Callback

from prodcat.core.console import clock, say
from prodcat.tune.results import OBJECTIVE, describe, stop_reason

#: why a trial ended, in words (prodcat.tune.results' ``stop`` column)
REASONS = {"asha": "stopped by ASHA at epoch {epochs}", "patience": "early stopping at epoch {epochs}",
           "completed": "completed {epochs} epochs", "budget": "cut by the time budget",
           "error": "failed", "unfinished": "unfinished"}
class SweepProgress(Callback):
    """Tune callback: a line per trial that ends (its values, validation hF, why it ended), the
    sweep's progress with an ETA and the best trial so far, and a heartbeat while nothing ends.

    Args:
        total: trials the sweep will run (``num_samples`` × grid points).
        keys: the searched fields, in the space's order (what describes a trial).
        base_epochs, base_patience: the base config's ``optim.epochs`` / ``optim.patience``
            (a trial's own values win when the space searches them).
        rungs: the epochs at which ASHA may stop a trial (empty without ASHA).
        metric: the reported metric (``val_hF`` or ``nested_hF``).
        heartbeat_s: seconds without a line before a progress line is printed anyway.
    """

    def __init__(self, total: int, keys: list[str], base_epochs: int, base_patience: int,
                 rungs: set[int] | list[int], metric: str = "val_hF",
                 heartbeat_s: float = 120.0) -> None:
        self.total, self.keys, self.metric = total, list(keys), metric
        self.base_epochs, self.base_patience = base_epochs, base_patience
        self.rungs, self.heartbeat_s = set(rungs), heartbeat_s
        self.start = self.last_line = time.monotonic()
        self.log = say

    def __getstate__(self) -> dict:  # saved with the sweep (--resume): settings only
        return {"total": self.total, "keys": self.keys, "base_epochs": self.base_epochs,
                "base_patience": self.base_patience, "rungs": sorted(self.rungs),
                "metric": self.metric, "heartbeat_s": self.heartbeat_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    # -- Tune's hooks ----------------------------------------------------------------------------
    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended(trials, trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trials, trial, error=getattr(trial, "error_msg", None) or "error")

    def on_step_end(self, iteration, trials, **info) -> None:
        if time.monotonic() - self.last_line >= self.heartbeat_s:
            self.log(self.progress_line(trials))
            self.last_line = time.monotonic()

    # -- lines -----------------------------------------------------------------------------------
    def trial_line(self, trial, error: str | None, ended: int) -> str:
        """``[tune] trial k/N <id> <values>: val hF …, <why it ended>, <time>``."""
        last = dict(trial.last_result or {})
        params = {k: trial.config.get(k) for k in self.keys if k in (trial.config or {})}
        epochs = int(last["epoch"]) + 1 if last.get("epoch") is not None else 0
        config = trial.config or {}
        planned = int(config.get("optim.epochs") or self.base_epochs)
        patience = int(config.get("optim.patience") or self.base_patience)
        reason = stop_reason(error, "TERMINATED", epochs, planned, last, patience, self.rungs)
        if self.metric != "val_hF":                       # nested_lopo: one report, no epochs
            reason = "failed" if error else "done"
        value = self.score(trial)
        score = f"{self.metric.replace('_hF', ' hF')} {value:.4f}" if value is not None else "no score"
        if last.get("best_epoch") is not None and value is not None:
            score += f" (epoch {int(last['best_epoch']) + 1} of {epochs})"
        why = REASONS.get(reason, reason).format(epochs=epochs) if reason != "done" else "done"
        if error:
            why += ": " + str(error).strip().splitlines()[-1][:120]
        seconds = last.get("time_total_s")
        took = f", {clock(seconds)}" if seconds is not None else ""
        return (f"[tune] trial {ended}/{self.total} {trial.trial_id} {describe(params)}: "
                f"{score}, {why}{took}")

    def progress_line(self, trials, ended_now: str | None = None) -> str:
        """``[tune] k/N trials ended (r running), elapsed, ETA; best so far``."""
        ended = {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}
        ended |= {ended_now} if ended_now else set()
        running = sum(t.status == "RUNNING" and t.trial_id not in ended for t in trials)
        elapsed = time.monotonic() - self.start
        text = (f"[tune] {len(ended)}/{self.total} trials ended ({running} running), "
                f"{clock(elapsed)} elapsed")
        if 0 < len(ended) < self.total:
            text += f", ETA {clock(elapsed / len(ended) * (self.total - len(ended)))}"
        scores = [(self.score(t), t.trial_id) for t in trials if self.score(t) is not None]
        if scores:
            value, trial_id = max(scores)
            text += f"; best so far {value:.4f} (trial {trial_id})"
        return text

    def score(self, trial) -> float | None:
        """A trial's best validation score so far (``best_val_hF``, else the metric), or None."""
        last = trial.last_result or {}
        value = last.get(OBJECTIVE, last.get(self.metric))
        return None if value is None else float(value)

    def _ended(self, trials, trial, error: str | None) -> None:
        ended = {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")} | {trial.trial_id}
        self.log(self.trial_line(trial, error, len(ended)))
        self.log(self.progress_line(trials, ended_now=trial.trial_id))
        self.last_line = time.monotonic()
