"""A Ray cluster of several nodes on this machine, started once for this directory's session,
the way Ray tests itself (``ray.cluster_utils.Cluster``): a head node without CPUs (the drivers,
Serve's controller and proxy, Ray Train's controllers, the dashboard for the State API) and two
worker nodes with their own raylets, object stores and metrics agents, on which all work runs.
A test kills a worker node with ``remove_node(node, allow_graceful=False)`` (every process of
that node gets SIGKILL, as Ray's own chaos tests do) and a fresh node takes its place.

This directory runs in its own pytest process (``scripts/test.sh``; ``pytest tests`` does not
recurse into it): a ``Cluster`` cannot share a process with the plain local Ray of
``tests/conftest.py``. Run it alone with ``pytest tests/cluster``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from dataclasses import dataclass, field

import pytest

from prodcat.core.runtime import free_port, free_ports

#: logical resources of each worker node (the machine has 2 cores: these are shares, not cores)
WORKER = {"num_cpus": 2, "object_store_memory": 200 * 1024**2}
#: Serve pushes autoscaling metrics every 10 s by default; 0.5 s lets a test see scaling quickly
FAST_SERVE_METRICS = {"RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
                      "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5"}

collect_ignore_glob: list[str] = []


def pytest_collection_modifyitems(config, items) -> None:
    """The tests that start their own ``ray start`` cluster (``ray job submit``, the chaos
    harness) run first, before the session's ``Cluster`` exists: started, its three idle nodes
    (raylets, metrics agents reporting each second) would run beside them on the same two cores
    to the end of the session."""
    items.sort(key=lambda item: "cluster" in getattr(item, "fixturenames", ()))


@dataclass
class LocalCluster:
    """The running cluster and what the tests do to it."""

    cluster: object                       # ray.cluster_utils.Cluster
    metrics_ports: dict[str, int] = field(default_factory=dict)   # node id → metrics export port
    killed: list[dict] = field(default_factory=list)

    @property
    def workers(self) -> list:
        return list(self.cluster.worker_nodes)

    def add_worker(self):
        """Start one more worker node (its own raylet and metrics port) and wait for it."""
        port = free_port()
        node = self.cluster.add_node(**WORKER, metrics_export_port=port)
        self.cluster.wait_for_nodes()
        self.metrics_ports[node.node_id] = port
        return node

    def node_of_actor(self, class_part: str, timeout_s: float = 60):
        """The worker node running a live actor whose class name contains ``class_part``
        (Ray's State API; waits for it to appear)."""
        from ray.util.state import list_actors

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            actors = [a for a in list_actors(address=self.cluster.address, limit=10_000,
                                             filters=[("state", "=", "ALIVE")])
                      if class_part in a.class_name]
            by_id = {n.node_id: n for n in self.workers}
            for actor in actors:
                if actor.node_id in by_id:
                    return by_id[actor.node_id], actor
            time.sleep(0.2)
        seen = sorted({(a.class_name, a.node_id[:8]) for a in list_actors(
            address=self.cluster.address, limit=10_000, filters=[("state", "=", "ALIVE")])})
        raise TimeoutError(f"no live actor of class *{class_part}* on a worker node "
                           f"({[n.node_id[:8] for n in self.workers]}); live actors: {seen}")

    def kill(self, node, what: str) -> float:
        """SIGKILL every process of ``node`` (raylet, object store, workers) and start a fresh
        worker node in its place; returns the time of the kill (``time.time()``)."""
        killed_at = time.time()
        self.cluster.remove_node(node, allow_graceful=False)
        self.metrics_ports.pop(node.node_id, None)
        self.killed.append({"node": node.node_id[:12], "what": what, "at": killed_at})
        self.add_worker()
        return killed_at

    def wait_metric(self, name: str, at_least: float, timeout_s: float = 60, **tags: str) -> float:
        """Poll the nodes' metrics until ``name`` (summed over nodes) reaches ``at_least``;
        returns the value (metrics reach the endpoints a few seconds after they are recorded)."""
        deadline, value = time.time() + timeout_s, 0.0
        while time.time() < deadline:
            value = metric_total(self.scrape(), name, **tags)
            if value >= at_least:
                return value
            time.sleep(1)
        return value

    def scrape(self) -> str:
        """The Prometheus text of every node's metrics endpoint, concatenated."""
        texts = []
        for port in self.metrics_ports.values():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    texts.append(r.read().decode())
            except OSError:
                continue
        return "\n".join(texts)


def metric_total(text: str, name: str, **tags: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``tags`` in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        labels, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in labels for k, v in tags.items()):
            total += float(value)
    return total


@pytest.fixture(scope="session")
def cluster(s3_server):
    """Head (0 CPUs, dashboard) + 2 worker nodes (2 logical CPUs each), driver connected."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.update(FAST_SERVE_METRICS)             # inherited by every node started below
    head_port, dashboard_port = free_ports(2)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_port": dashboard_port,
        "metrics_export_port": head_port, "object_store_memory": 200 * 1024**2,
        # metrics reach the endpoints each second; a dead node is noticed after ~5 s (default ~15 s)
        "_system_config": {"metrics_report_interval_ms": 1000, "health_check_period_ms": 1000,
                           "health_check_timeout_ms": 2000, "health_check_failure_threshold": 5}})
    handle = LocalCluster(cluster, {cluster.head_node.node_id: head_port})
    for _ in range(2):
        handle.add_worker()
    cluster.connect()
    yield handle
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def cascade(tmp_path_factory):
    """The tiny real cascade of tests/fixtures (tiny encoders, two checkpoints, cascade.json)."""
    from tests.fixtures.cascade import build_tiny_cascade

    return build_tiny_cascade(tmp_path_factory.mktemp("cascade"))


@pytest.fixture(scope="session")
def report(tmp_path_factory):
    """Each failure test's record (what was killed, when, what was lost, recovery time); written
    to ``$PRODCAT_CLUSTER_REPORT`` (JSON) at the end when set."""
    records: list[dict] = []
    yield records
    target = os.environ.get("PRODCAT_CLUSTER_REPORT")
    if target:
        with open(target, "w") as f:
            json.dump(records, f, indent=2)
