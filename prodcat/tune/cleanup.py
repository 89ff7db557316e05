"""Reclaim what an early-stopped Ray Train run leaves behind on a cluster without a dashboard.

Each trial is a Tune function that drives a ``TorchTrainer``. When ASHA stops a trial, Tune ends
the trial's actor; the Train controller it owns dies with it, before it can remove its workers'
placement group. Ray Train's own ``PlacementGroupCleaner`` (a detached actor) removes it once it
sees the controller dead, but it asks through the State API, which needs the dashboard: on a
local instance started with ``include_dashboard=False`` (tests, small machines) the group stays
reserved and the cleaner polls forever, and after a few stopped trials nothing can be scheduled.

:class:`OrphanReaper` is a Tune callback that, every few seconds of the sweep, removes placement
groups whose (non-detached) creator actor is dead and ends ``PlacementGroupCleaner`` actors on this
node whose owner is dead (their processes: no handle to them is left). Both are garbage by Ray's own rules (the GCS frees such a group once the job ends);
on a cluster with a dashboard the reaper simply finds nothing, or does the cleaner's job first.
It reads the GCS tables directly (``ray._private.state``), the same source ``ray status`` uses.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from ray.tune import Callback

logger = logging.getLogger(__name__)

CLEANER_CLASS = "PlacementGroupCleaner"


def reap_orphans() -> tuple[int, int]:
    """Remove orphaned placement groups and cleaner actors; returns ``(groups, actors)`` ended."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup

    accessor = state._connect_and_get_accessor()
    actors = [gcs_pb2.ActorTableData.FromString(raw)
              for raw in accessor.get_actor_table(None, None)]
    alive = gcs_pb2.ActorTableData.ALIVE
    dead = gcs_pb2.ActorTableData.DEAD
    alive_workers = {a.address.worker_id for a in actors if a.state == alive}
    dead_actors = {a.actor_id for a in actors if a.state == dead}
    groups = 0
    for raw in accessor.get_placement_group_table():
        pg = gcs_pb2.PlacementGroupTableData.FromString(raw)
        orphan = (pg.creator_actor_id in dead_actors and not pg.is_detached
                  and pg.state != gcs_pb2.PlacementGroupTableData.REMOVED)
        if orphan:
            ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
            groups += 1
    ended = 0
    here = ray.NodeID.from_hex(ray.get_runtime_context().get_node_id()).binary()
    for actor in actors:
        if (actor.class_name == CLEANER_CLASS and actor.state == alive and actor.pid
                and actor.address.node_id == here
                and actor.owner_address.worker_id not in alive_workers):
            try:  # no handle to it exists any more; it polls forever, so end its process
                os.kill(actor.pid, signal.SIGTERM)
                ended += 1
            except ProcessLookupError:
                pass
    if groups or ended:
        logger.info("reclaimed %d placement group(s) and %d cleaner actor(s) of stopped trials",
                    groups, ended)
    return groups, ended


class OrphanReaper(Callback):
    """Tune callback: :func:`reap_orphans` at most every ``interval_s`` seconds and at the end."""

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self._last = 0.0
        self.reclaimed = [0, 0]

    def _reap(self) -> None:
        self._last = time.monotonic()
        try:
            groups, actors = reap_orphans()
        except Exception as err:  # never let housekeeping break a sweep
            logger.warning("could not reclaim resources of stopped trials: %s", err)
            return
        self.reclaimed[0] += groups
        self.reclaimed[1] += actors

    def on_step_begin(self, iteration, trials, **info) -> None:
        if time.monotonic() - self._last >= self.interval_s:
            self._reap()

    def on_experiment_end(self, trials, **info) -> None:
        self._reap()
