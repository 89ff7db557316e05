"""Give back what the sweep's own stopped trials leave reserved, and nothing else.

Each trial is a Tune function that drives a ``TorchTrainer``; the Train controller reserves a
placement group for its workers. When ASHA stops a trial (or the sweep is interrupted), Tune ends
the trial's actor, and the controller it owns dies with it before it can remove that group. A
group created by a non-detached actor lives until its job ends, so in a long sweep the reserved
CPUs pile up and nothing more can be scheduled. Ray Train's own ``PlacementGroupCleaner`` removes
it when it can ask the State API (a cluster with the dashboard: ``ray start --head``, KubeRay);
on a local instance without the dashboard it cannot.

The mechanism here touches only the sweep's own trials, through public Ray APIs: each trial's
rank-0 training worker writes the id of the placement group it runs in
(:func:`ray.util.get_current_placement_group`) to ``<trial output>/placement_groups.json`` when it
starts (:func:`prodcat.train.loop.log_placement_group`), and the sweep removes exactly those
groups (:func:`ray.util.remove_placement_group`), when they are still there, a few seconds after
Tune ended their trial (:class:`TrialPlacementGroups`) and once more for every trial when the
sweep returns (:func:`release_sweep`). Other jobs' groups and actors are never looked at.
"""

from __future__ import annotations

import json
import logging
import time

import pyarrow.fs as pafs
from ray.tune import Callback

from prodcat.core import storage

logger = logging.getLogger(__name__)

#: the file in a trial's output folder listing its placement groups (JSON list of hex ids)
PG_LOG = "placement_groups.json"


def remove_group(hex_id: str) -> bool:
    """Remove the placement group ``hex_id`` unless it is already gone; True when removed."""
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    group = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(hex_id)))
    if placement_group_table(group).get("state") in (None, "REMOVED"):
        return False
    remove_placement_group(group)
    return True


def release_trial(trials_uri: str, trial_id: str) -> list[str]:
    """Remove the placement groups trial ``trial_id`` recorded (``<trials_uri>/<trial_id>/``
    ``placement_groups.json``) that are still there; returns the ids removed. Call it only once
    the trial has ended: its workers run in them."""
    uri = storage.join(trials_uri, trial_id, PG_LOG)
    removed = []
    for group in json.loads(storage.read_text(uri)) if storage.exists(uri) else []:
        try:
            if remove_group(group):
                removed.append(group)
        except Exception as err:  # never let housekeeping break a sweep
            logger.warning("could not remove placement group %s of trial %s: %s", group, trial_id, err)
    if removed:
        logger.info("removed %d placement group(s) of ended trial %s", len(removed), trial_id)
    return removed


def release_sweep(trials_uri: str) -> list[str]:
    """:func:`release_trial` for every trial folder under ``trials_uri`` (after the sweep's
    ``Tuner.fit`` returned, interrupted or not: none of its trials runs any more)."""
    fs, path = storage.filesystem(trials_uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    removed = []
    for info in infos:
        if info.type == pafs.FileType.Directory:
            removed += release_trial(trials_uri, info.base_name)
    return removed


class TrialPlacementGroups(Callback):
    """Tune callback: :func:`release_trial` ``grace_s`` seconds after Tune ended a trial
    (stopped by ASHA, completed or failed), when its actor and Train controller are gone.

    Attributes:
        removed: ids of the groups removed (a group Ray Train removed itself, as it does for a
            completed trial or on a cluster with the dashboard, is not counted).
    """

    def __init__(self, trials_uri: str, grace_s: float = 3.0) -> None:
        self.trials_uri, self.grace_s = trials_uri, grace_s
        self.ended: dict[str, float] = {}          # trial id → when Tune ended it
        self.removed: list[str] = []

    def __getstate__(self) -> dict:  # saved with the sweep (--resume): settings only
        return {"trials_uri": self.trials_uri, "grace_s": self.grace_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["trials_uri"], float(state.get("grace_s", 3.0)))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended[trial.trial_id] = time.monotonic()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended[trial.trial_id] = time.monotonic()

    def on_step_begin(self, iteration, trials, **info) -> None:
        for trial_id in [t for t, at in self.ended.items() if time.monotonic() - at >= self.grace_s]:
            del self.ended[trial_id]
            self.removed += release_trial(self.trials_uri, trial_id)
