"""The main job under chaos (issue 22): a worker node killed inside every stage, then compared
with an undisturbed run of the same settings.

  python benchmarks/chaos.py --seeds 1 2 3 --sample-per-category 3 --max-epochs 2

What it does, on this machine:

1. starts a Ray cluster with ``ray start``: a head node without CPUs (GCS, dashboard, the job's
   driver) and ``--workers`` worker nodes (``--worker-cpus`` logical CPUs each), on its own ports
   and ``--temp-dir``. Every process a node starts carries ``PRODCAT_CHAOS=<cluster>:<node>`` in
   its environment (the raylet hands its environment to the workers it spawns), which is how the
   harness finds a node's processes to kill them and how it ends exactly its own cluster;
2. submits the main job with ``ray job submit`` (``prodcat pipeline``) into a run folder every
   node reaches (a local path here; shared storage on a real cluster, ``cluster/README.md``),
   first undisturbed (or reuses ``--baseline``), then once per seed with chaos: when the job's
   log shows ``=== [stage] ===``, a worker node chosen by the seeded schedule is killed (SIGKILL
   of its raylet, agents and workers) at a seeded moment inside that stage (a share in
   ``[0.1, 0.7]`` of the stage's undisturbed seconds), and a replacement node is started, as an
   autoscaler would. The head is never killed: surviving that needs GCS fault tolerance with an
   external Redis (``cluster/README.md``);
3. compares each disturbed run with the undisturbed one (:func:`compare_runs`) and writes
   ``benchmarks/results/chaos_<tag>.json`` and a Markdown table (one row per stage).

Times are seconds (wall clock). The run folders stay under ``--workdir`` for inspection.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prodcat.core.runtime import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MARK = "PRODCAT_CHAOS"
STAGE_LINE = re.compile(r"^=== \[(\w+)\] ===$", re.M)
#: lines of a run's Ray log that say work was lost or redone
LOSS_WORDS = re.compile(r"died|retry|retries|unexpectedly|NodeDied|lost|restart|rescheduled|"
                        r"Failed|failed", re.I)


# ------------------------------------------------------------------ the cluster
@dataclass
class Node:
    """One node started by the harness: its name, custom resource and start/up times."""

    name: str
    head: bool = False
    started_at: float = 0.0      # time.time() when `ray start` was run
    up_at: float | None = None   # when the cluster listed it alive
    killed_at: float | None = None


class ChaosCluster:
    """A head and worker nodes started with ``ray start`` on this machine.

    Args:
        temp: the cluster's ``--temp-dir`` (short: Ray's socket paths must stay under 107 bytes).
        worker_cpus: logical CPUs of each worker node (shares of this machine's cores).
        object_store_mb: each node's object store (MiB).
    """

    def __init__(self, temp: str, worker_cpus: float = 2, object_store_mb: int = 300) -> None:
        self.temp, self.worker_cpus, self.object_store_mb = temp, worker_cpus, object_store_mb
        self.id = f"c{os.getpid()}"
        self.port, self.dashboard_port = free_port(), free_port()
        self.nodes: dict[str, Node] = {}
        self._count = 0
        self._lock = threading.Lock()

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def workers(self) -> list[str]:
        """Names of the worker nodes up and not killed."""
        return [n.name for n in self.nodes.values()
                if not n.head and n.killed_at is None and n.up_at is not None]

    def _env(self, name: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "AWS_"))}
        env.update({MARK: f"{self.id}:{name}", "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "disabled",
                    "PATH": f"{BIN}:{env.get('PATH', '')}", "PYTHONPATH": str(REPO)})
        return env

    def _ray_start(self, name: str, *args: str, tries: int = 3) -> None:
        """``ray start`` for node ``name``, up to ``tries`` times: each try with ports chosen
        anew (a port taken since it was chosen makes the node's agent fail, and the start fail
        with "timed out during startup" every time it is reused); when a try fails, the last lines
        of the error logs of the node's raylet and agents are printed."""
        for attempt in range(1, tries + 1):
            ports = [f"--{p}={free_port()}" for p in (
                "node-manager-port", "object-manager-port", "metrics-export-port",
                "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")]
            cmd = [str(BIN / "ray"), "start", f"--temp-dir={self.temp}", "--disable-usage-stats",
                   f"--object-store-memory={self.object_store_mb * 1024**2}",
                   f"--resources={json.dumps({name: 1})}", *ports, *args]
            began = time.time()
            done = subprocess.run(cmd, env=self._env(name), capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                return
            # a loaded machine (the raylet may miss Ray's fixed 30 s to register) or a port taken
            print(f"[chaos] ray start ({name}) failed (attempt {attempt}/{tries}): "
                  f"{done.stderr.strip().splitlines()[-1:]}; ports {' '.join(ports)}", flush=True)
            for log in self._logs_since(began, "raylet", "dashboard_agent", "runtime_env_agent"):
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                print(f"[chaos]   {log.name}: " + "\n[chaos]     ".join(tail), flush=True)
            self._end(self.pids(name))
            if attempt < tries:
                time.sleep(5 * attempt)
        raise RuntimeError(f"ray start ({name}) → {done.returncode}\n{done.stderr[-2000:]}")

    def _logs_since(self, began: float, *prefixes: str) -> list[Path]:
        """The cluster's error logs named ``<prefix>*.err`` written since ``began`` (time.time())."""
        logs = Path(self.temp) / "session_latest" / "logs"
        found = [p for prefix in prefixes for p in logs.glob(f"{prefix}*.err")] if logs.is_dir() else []
        return sorted(p for p in found if p.is_file() and p.stat().st_mtime >= began)

    @staticmethod
    def _end(pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def start(self, workers: int = 2) -> None:
        """Start the head (0 CPUs, dashboard on 127.0.0.1) and ``workers`` worker nodes."""
        self.nodes["head"] = Node("head", head=True, started_at=time.time())
        self._ray_start("head", "--head", f"--port={self.port}", "--num-cpus=0",
                        f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
                        f"--ray-client-server-port={free_port()}")
        self.wait_up("head")
        for _ in range(workers):
            self.add_worker()

    def add_worker(self, tries: int = 3) -> str:
        """Start one more worker node and wait until the cluster lists it; returns its name."""
        with self._lock:
            self._count += 1
            name = f"w{self._count}"
            self.nodes[name] = Node(name, started_at=time.time())
        self._ray_start(name, f"--address=127.0.0.1:{self.port}", f"--num-cpus={self.worker_cpus}",
                        tries=tries)
        self.wait_up(name)
        return name

    def wait_up(self, name: str, timeout_s: float = 180) -> float:
        """Wait until an alive node holds the resource ``name``; returns when (time.time())."""
        from ray.util.state import list_nodes

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                alive = list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")],
                                   raise_on_missing_output=False)
            except Exception:  # noqa: BLE001 - the dashboard is still starting
                alive = []
            if any(name in (n.resources_total or {}) for n in alive):
                self.nodes[name].up_at = time.time()
                return self.nodes[name].up_at
            time.sleep(0.5)
        raise TimeoutError(f"node {name} not alive after {timeout_s} s")

    def pids(self, name: str | None = None) -> list[int]:
        """Pids of the processes of node ``name`` (all of the cluster's when None)."""
        want = f"{MARK}={self.id}:{name or ''}".encode()
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                entries = environ.read_bytes().split(b"\0")
            except OSError:
                continue
            if any(e == want if name else e.startswith(want) for e in entries):
                found.append(int(environ.parent.name))
        return [p for p in found if p != os.getpid()]

    def kill(self, name: str) -> dict:
        """SIGKILL every process of worker node ``name``; returns what was running on it."""
        if self.nodes[name].head:
            raise ValueError("the head node is never killed (GCS fault tolerance needs Redis)")
        running = self.running_on(name)
        pids = self.pids(name)
        self._end(pids)
        self.nodes[name].killed_at = time.time()
        return {"node": name, "processes_killed": len(pids), **running}

    def running_on(self, name: str) -> dict:
        """Task and actor names running on node ``name`` (Ray's State API), by count."""
        from ray.util.state import list_actors, list_nodes, list_tasks

        try:
            node = next(n.node_id for n in list_nodes(address=self.dashboard, filters=[(
                "state", "=", "ALIVE")], raise_on_missing_output=False)
                        if name in (n.resources_total or {}))
            tasks = list_tasks(address=self.dashboard, filters=[("node_id", "=", node), (
                "state", "=", "RUNNING")], limit=10_000, raise_on_missing_output=False, timeout=10)
            actors = list_actors(address=self.dashboard, filters=[("node_id", "=", node), (
                "state", "=", "ALIVE")], limit=10_000, raise_on_missing_output=False, timeout=10)
        except Exception as err:  # noqa: BLE001 - recorded, the kill goes ahead
            return {"running_tasks": {}, "live_actors": {}, "state_api_error": repr(err)[:200]}
        count = lambda names: {k: names.count(k) for k in sorted(set(names))}  # noqa: E731
        return {"node_id": node[:12],
                "running_tasks": count([t.name for t in tasks if t.type == "NORMAL_TASK"]),
                "live_actors": count([a.class_name for a in actors])}

    def stop(self) -> None:
        """End every process of this cluster (SIGTERM, then SIGKILL): never ``ray stop``, which
        would stop every Ray instance on the machine."""
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + grace
            while self.pids() and time.time() < deadline:
                time.sleep(0.5)


# ------------------------------------------------------------------ one job
@dataclass
class Kill:
    """One scheduled kill: inside ``stage``, ``after_s`` seconds after the stage began."""

    stage: str
    after_s: float
    node: str | None = None        # chosen when it happens (seeded)
    done: bool = False
    inside_stage: bool | None = None
    at: float | None = None
    what: dict = field(default_factory=dict)
    replacement: str | None = None
    replacement_up_s: float | None = None
    replacement_error: str | None = None


def schedule(seed: int, stages: list[str], baseline_seconds: dict[str, float],
             low: float = 0.1, high: float = 0.7) -> list[Kill]:
    """One kill per stage at a seeded share of the stage's undisturbed duration (seconds)."""
    rng = random.Random(seed)
    return [Kill(s, round(rng.uniform(low, high) * max(baseline_seconds.get(s, 1.0), 0.5), 2))
            for s in stages]


def entrypoint(run: str, args: argparse.Namespace) -> str:
    """The job's command line: the main job from this tree, unbuffered so stage lines arrive."""
    cmd = [sys.executable, "-u", "-m", "prodcat", "pipeline", "--output", run,
           "--sample-per-category", str(args.sample_per_category)]
    if args.max_epochs:
        cmd += ["--max-epochs", str(args.max_epochs)]
    if args.stages:
        cmd += ["--stages", *args.stages]
    for item in args.set or []:
        cmd += ["--set", item]
    return f"cd {REPO} && PYTHONPATH={REPO} " + " ".join(cmd)


def run_job(cluster: ChaosCluster, run: str, command: str, kills: list[Kill] | None,
            seed: int = 0, timeout_s: float = 7200, min_workers: int = 2) -> dict:
    """Submit ``command`` as a Ray job, kill nodes per ``kills`` while it runs, wait for it.

    A kill that is due waits until ``min_workers`` worker nodes are up (the previous kill's
    replacement has started), so the cluster never has fewer than ``min_workers - 1``; a stage
    that ends first records its kill as not inside the stage.

    Returns the job's status, log, stage start times (time.time()) and the kills done."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(cluster.dashboard)
    sub = f"chaos-{Path(run).name}-{int(time.time())}"
    client.submit_job(entrypoint=command, submission_id=sub)
    rng, kills = random.Random(seed), kills or []
    stages: dict[str, float] = {}
    threads: list[threading.Thread] = []
    t0, log = time.time(), ""
    while True:
        status = client.get_job_status(sub)
        log = client.get_job_logs(sub)
        for name in STAGE_LINE.findall(log):
            stages.setdefault(name, time.time())
        current = list(stages)[-1] if stages else None
        for kill in kills:
            if kill.done or kill.stage not in stages:
                continue
            due = time.time() - stages[kill.stage] >= kill.after_s
            if current != kill.stage or status.is_terminal():
                kill.done, kill.inside_stage = True, False          # the stage ended first
            elif due and len(cluster.workers) >= min_workers:      # never below min_workers - 1
                kill.done, kill.inside_stage = True, True
                threads.append(_kill_and_replace(cluster, kill, rng))
        if status.is_terminal():
            break
        if time.time() - t0 > timeout_s:
            client.stop_job(sub)
            raise TimeoutError(f"job {sub} still running after {timeout_s} s")
        time.sleep(0.5)
    for t in threads:
        t.join(300)
    info = client.get_job_info(sub)
    return {"submission_id": sub, "job_id": info.job_id, "status": str(status.value),
            "succeeded": status == JobStatus.SUCCEEDED, "seconds": round(time.time() - t0, 1),
            "stage_started": stages, "log": log, "kills": [asdict(k) for k in kills]}


def _kill_and_replace(cluster: ChaosCluster, kill: Kill, rng: random.Random) -> threading.Thread:
    """Kill a seeded choice of the live worker nodes now; start its replacement in a thread."""
    kill.node = rng.choice(sorted(cluster.workers))
    kill.what = cluster.kill(kill.node)
    kill.at = cluster.nodes[kill.node].killed_at

    def replace() -> None:
        try:
            kill.replacement = cluster.add_worker(tries=10)
        except (RuntimeError, TimeoutError) as err:      # recorded; the job goes on without it
            kill.replacement_error = str(err).splitlines()[-1][:200]
            return
        kill.replacement_up_s = round(cluster.nodes[kill.replacement].up_at - kill.at, 1)

    thread = threading.Thread(target=replace, daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------ what was redone
def retried_tasks(cluster: ChaosCluster, job_id: str | None) -> tuple[list[dict], str | None]:
    """Task attempts of the job beyond the first, and failed attempts (Ray's State API):
    ``({"name", "attempt", "state", "error_type", "created"}, ...), error`` (created:
    time.time(); error: why the listing failed, None when it worked)."""
    from ray.util.state import list_tasks

    if not job_id:
        return [], "no job id"
    try:   # the State API answers at most 10,000 rows per call
        tasks = list_tasks(address=cluster.dashboard, filters=[("job_id", "=", job_id)],
                           limit=10_000, raise_on_missing_output=False, timeout=60)
    except Exception as err:  # noqa: BLE001 - recorded; the job's log still says what was redone
        return [], repr(err)[:300]
    return [{"name": t.name, "attempt": t.attempt_number, "state": t.state,
             "error_type": t.error_type, "created": (t.creation_time_ms or 0) / 1000}
            for t in tasks if t.attempt_number > 0 or t.state == "FAILED"], None


def stage_of(at: float, stage_started: dict[str, float]) -> str | None:
    """The stage running at ``at`` (time.time()), from the stages' start times."""
    current = None
    for name, start in sorted(stage_started.items(), key=lambda kv: kv[1]):
        if start <= at:
            current = name
    return current


RETRIED = re.compile(r"Task (\S+) failed\. There are (?:\w+) retries remaining, so the task will be retried")
RECOVERED = re.compile(r"Attempting to recover (\d+) lost objects")


def log_events(log: str) -> dict[str, dict]:
    """What the job's own log says was redone, per stage: tasks Ray retried (by name, from its
    "will be retried" lines) and objects it rebuilt from lineage ("Attempting to recover")."""
    events: dict[str, dict] = {}
    stage = None
    for line in log.splitlines():
        found = STAGE_LINE.match(line.strip())
        if found:
            stage = found.group(1)
            continue
        entry = events.setdefault(stage or "-", {"retried": {}, "objects_recovered": 0})
        if (m := RETRIED.search(line)):
            entry["retried"][m.group(1)] = entry["retried"].get(m.group(1), 0) + 1
        if (m := RECOVERED.search(line)):
            entry["objects_recovered"] += int(m.group(1))
    return events


# ------------------------------------------------------------------ comparison
def parquet_inventory(run: Path) -> dict[str, dict]:
    """Every Parquet dataset of a run folder (a folder's ``*.parquet`` files, by path relative to
    the run): files, rows, distinct ``product_id`` values and a hash of their sorted set."""
    import pyarrow.parquet as pq

    groups: dict[str, list[Path]] = {}
    for path in sorted(run.rglob("*.parquet")):
        if "logs" in path.relative_to(run).parts or path.name.startswith("."):
            continue
        groups.setdefault(str(path.parent.relative_to(run)), []).append(path)
    out = {}
    for folder, files in groups.items():
        ids, rows = [], 0
        for f in files:
            meta = pq.read_metadata(f)
            rows += meta.num_rows
            if "product_id" in meta.schema.names:
                ids += [str(i) for i in pq.read_table(f, columns=["product_id"])["product_id"].to_pylist()]
        distinct = sorted(set(ids))
        out[folder] = {"files": len(files), "rows": rows, "product_ids": len(distinct),
                       "ids_sha": hashlib.sha256("\n".join(distinct).encode()).hexdigest()[:16]}
    return out


def store_duplicates(store: Path) -> dict[str, int]:
    """Per feature set of the embedding store's parts: rows written minus distinct products
    (0: no product written twice)."""
    import pyarrow.parquet as pq

    seen: dict[str, list[str]] = {}
    for part in sorted(store.glob("part-*.parquet")):
        names = pq.read_schema(part).names
        key = "+".join(sorted(n[4:] for n in names if n.startswith("emb_")))
        seen.setdefault(key, []).extend(pq.read_table(part, columns=["product_id"])["product_id"].to_pylist())
    return {k: len(v) - len(set(v)) for k, v in seen.items()}


def vector_difference(base: Path, other: Path) -> dict[str, float]:
    """Largest absolute difference per stored vector, product by product (0.0: identical)."""
    import numpy as np
    import pyarrow.compute as pc

    from prodcat.embed.store import read_store

    a, _ = read_store(str(base))
    b, _ = read_store(str(other))
    b = b.take(pc.index_in(a["product_id"], value_set=b["product_id"]))
    diff = {}
    for name in a.column_names:
        if name.startswith("emb_"):
            x = a[name].combine_chunks().flatten().to_numpy(zero_copy_only=False)
            y = b[name].combine_chunks().flatten().to_numpy(zero_copy_only=False)
            diff[name[4:]] = float(np.max(np.abs(x - y))) if len(x) == len(y) else float("inf")
    return diff


NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")
#: a number followed by one of these is a wall time or a rate (differs between any two runs)
TIMING_AFTER = re.compile(r"^\s?(s|ms|min)\b|^\s?s\)|^\s?products/s|^ s/epoch")
URL = re.compile(r"https?://[\w.]+:\d+")     # the service's port differs between runs
#: a table column with one of these in its header holds wall times
TIMING_COLUMN = re.compile(r"seconds|\bs\b|time|/s|\bms\b", re.I)


def _timing_only(a: str, b: str, header: list[str] | None) -> bool:
    """True when lines ``a`` and ``b`` differ only in wall times and rates: numbers in a
    table column whose header names seconds, or numbers followed by a unit of time or rate."""
    a, b = (URL.sub("<url>", line) for line in (a, b))
    if NUMBER.sub("#", a) != NUMBER.sub("#", b):
        return False
    if "wall time" in a.lower():                    # "Stage wall times (s): catalog 53.5, ..."
        return True
    cells_a, cells_b = a.split("|"), b.split("|")
    for i, (x, y) in enumerate(zip(cells_a, cells_b)):
        if x == y:
            continue
        if header and len(header) == len(cells_a) and TIMING_COLUMN.search(header[i]):
            continue
        for m, n in zip(NUMBER.finditer(x), NUMBER.finditer(y)):
            if m.group() != n.group() and not TIMING_AFTER.search(x[m.end():m.end() + 12]):
                return False
    return True


def report_difference(base: Path, other: Path) -> dict:
    """``report.md`` line by line (the run folder's own path masked): lines that differ only in
    wall times and rates, and the rest (figures that should match), listed."""
    a = (base / "report.md").read_text().splitlines() if (base / "report.md").exists() else []
    b = (other / "report.md").read_text().splitlines() if (other / "report.md").exists() else []
    b = [line.replace(str(other), str(base)) for line in b]
    timing, figures, header = 0, [], None
    for x, y in zip(a, b):
        if x.startswith("|") and not x.startswith("|---"):
            header = header or x.split("|")
        elif not x.startswith("|"):
            header = None
        if x == y:
            continue
        if _timing_only(x, y, header):
            timing += 1
        else:
            figures.append({"undisturbed": x[:300], "disturbed": y[:300]})
    return {"lines": len(a), "lines_other": len(b), "differing_timing_only": timing,
            "differing_figures": figures}


def eval_within_interval(base: Path, other: Path) -> dict:
    """Every hF of ``eval/results.json`` (walked as a tree): equal, or inside the undisturbed
    run's 95 % bootstrap interval, or outside it (listed)."""
    def walk(node, path=""):
        if isinstance(node, dict):
            if isinstance(node.get("hF"), (int, float)):
                yield path, node
            for k, v in node.items():
                yield from walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}/{i}")

    try:
        a = dict(walk(json.loads((base / "eval/results.json").read_text())))
        b = dict(walk(json.loads((other / "eval/results.json").read_text())))
    except FileNotFoundError:
        return {"compared": 0}
    equal = inside = 0
    outside = []
    for key, row in a.items():
        if key not in b:
            outside.append({"where": key, "missing": True})
        elif b[key]["hF"] == row["hF"]:
            equal += 1
        else:
            ci = row.get("ci") or row.get("hF_ci") or row.get("interval")
            if isinstance(ci, list) and len(ci) == 2 and ci[0] <= b[key]["hF"] <= ci[1]:
                inside += 1
            else:
                outside.append({"where": key, "undisturbed": row["hF"], "disturbed": b[key]["hF"],
                                "interval": ci})
    return {"compared": len(a), "equal": equal, "inside_interval": inside, "outside": outside}


def outputs_check(run: Path) -> dict:
    """The disturbed run's own checks: checkpoints load, the cascade resolves with its files,
    the demo service answered every product."""
    out: dict = {}
    from prodcat.models.checkpoint import load_checkpoint

    for name in ("text", "multimodal"):
        try:
            load_checkpoint(str(run / "train" / name / "model"))
            out[f"checkpoint_{name}_loads"] = True
        except Exception as err:  # noqa: BLE001 - recorded as the check's result
            out[f"checkpoint_{name}_loads"] = repr(err)[:200]
    try:
        from prodcat.cascade.spec import read_cascade

        read_cascade(str(run / "cascade"))
        out["cascade_complete"] = True
    except Exception as err:  # noqa: BLE001
        out["cascade_complete"] = repr(err)[:200]
    demo = run / "serve_demo.json"
    if demo.exists():
        d = json.loads(demo.read_text())
        out["service_answered"] = d.get("batch_status") == 200 and all(
            r.get("predicted_path") for r in d.get("rows", []))
        out["service_paths"] = [r.get("predicted_path") for r in d.get("rows", [])]
    return out


def compare_runs(base: Path, other: Path) -> dict:
    """Everything "nothing lost" means, checked: Parquet datasets (rows, distinct products, the
    same product set), no product twice in the store or predictions, vectors, report figures,
    evaluation figures within their intervals, checkpoints, cascade and service."""
    a, b = parquet_inventory(base), parquet_inventory(other)
    datasets = {}
    for folder in sorted(set(a) | set(b)):
        x, y = a.get(folder), b.get(folder)
        datasets[folder] = {"undisturbed": x, "disturbed": y,
                            "same_rows_and_products": bool(x and y and all(
                                x[k] == y[k] for k in ("rows", "product_ids", "ids_sha")))}
    checks = {"datasets_equal": all(d["same_rows_and_products"] for d in datasets.values()),
              "datasets": datasets}
    if (other / "embeddings").exists():
        checks["store_duplicates"] = store_duplicates(other / "embeddings")
        if (base / "embeddings").exists():
            checks["vector_max_abs_diff"] = vector_difference(base / "embeddings", other / "embeddings")
    if (other / "predictions").exists():
        from prodcat.score.parts import read_predictions

        ids = read_predictions(str(other / "predictions"))["product_id"].to_pylist()
        checks["prediction_duplicates"] = len(ids) - len(set(ids))
        base_pred = read_predictions(str(base / "predictions")).sort_by("product_id")
        pred = read_predictions(str(other / "predictions")).sort_by("product_id")
        if base_pred.num_rows == pred.num_rows:
            checks["predictions_same_category"] = sum(
                x == y for x, y in zip(base_pred["category_id"].to_pylist(), pred["category_id"].to_pylist()))
    if (other / "train").exists():
        checks.update(outputs_check(other))
    if (base / "serve_demo.json").exists() and "service_paths" in checks:
        checks["service_same_paths"] = checks["service_paths"] == outputs_check(base).get("service_paths")
    checks["report"] = report_difference(base, other)
    checks["evaluation"] = eval_within_interval(base, other)
    return checks


# ------------------------------------------------------------------ the table
def stage_rows(job: dict, base_seconds: dict, chaos_seconds: dict, retried: list[dict],
               run: Path) -> list[dict]:
    """One row per stage: when the node was killed, what ran on it, what was redone, the
    replacement's start-up and the stage's extra seconds against the undisturbed run."""
    ray_log = run / "logs" / "ray.log"
    loss_lines = [ln for ln in ray_log.read_text(errors="replace").splitlines()
                  if LOSS_WORDS.search(ln)] if ray_log.exists() else []
    rows, said = [], log_events(job["log"])
    for kill in job["kills"]:
        stage = kill["stage"]
        redone = [t for t in retried if stage_of(t["created"], job["stage_started"]) == stage]
        names = sorted({t["name"] for t in redone})
        extra = (round(chaos_seconds[stage] - base_seconds[stage], 1)
                 if stage in chaos_seconds and stage in base_seconds else None)
        rows.append({
            "stage": stage, "killed_after_s": (round(kill["at"] - job["stage_started"][stage], 1)
                                               if kill["at"] else None),
            "inside_stage": kill["inside_stage"], "node": kill["node"],
            "running_on_node": {"tasks": kill["what"].get("running_tasks", {}),
                                "actors": kill["what"].get("live_actors", {})},
            "task_attempts_redone": len([t for t in redone if t["attempt"] > 0]),
            "failed_attempts": len([t for t in redone if t["state"] == "FAILED"]),
            "redone_tasks": names[:8], "replacement_up_s": kill["replacement_up_s"],
            "log_retried": said.get(stage, {}).get("retried", {}),
            "log_objects_recovered": said.get(stage, {}).get("objects_recovered", 0),
            "stage_s": chaos_seconds.get(stage), "undisturbed_stage_s": base_seconds.get(stage),
            "extra_s": extra})
    return {"rows": rows, "ray_log_loss_lines": loss_lines[:20],
            "ray_log_loss_line_count": len(loss_lines)}


def _short(d: dict) -> str:
    return ", ".join(f"{k}×{v}" for k, v in d.items()) or "nothing"


def _redone(r: dict) -> str:
    """What the job's log says was redone; Ray's State API count of retried task attempts only
    when it found any (under load its task listing came back empty, see the notes)."""
    parts = []
    if r.get("log_retried"):
        parts.append("retried " + _short(r["log_retried"]))
    if r.get("log_objects_recovered"):
        parts.append(f"{r['log_objects_recovered']} object(s) rebuilt from lineage")
    if r["task_attempts_redone"]:
        parts.append(f"{r['task_attempts_redone']} task attempt(s) ({', '.join(r['redone_tasks'][:3])})")
    return "; ".join(parts) or "no retry or rebuild in the job's log"


def _checks_line(run: dict) -> str:
    c = run["checks"]
    ev, rep = c["evaluation"], c["report"]
    vec = c.get("vector_max_abs_diff", {})
    return (f"- seed {run['seed']}: job {run['status']} in {run['seconds']} s; Parquet datasets equal "
            f"(rows, product ids): {c['datasets_equal']} ({len(c['datasets'])} datasets); products "
            f"stored twice: {sum(c.get('store_duplicates', {}).values())}; predictions twice: "
            f"{c.get('prediction_duplicates')}; vectors max |diff| "
            f"{max(vec.values()) if vec else '-'}; same predicted category: "
            f"{c.get('predictions_same_category')}; evaluation hF: {ev.get('equal')} equal, "
            f"{ev.get('inside_interval')} inside the interval, {len(ev.get('outside', []))} outside; "
            f"report.md: {rep['differing_timing_only']} lines differ in wall times/rates only, "
            f"{len(rep['differing_figures'])} in figures; checkpoints load: "
            f"{c.get('checkpoint_text_loads')}/{c.get('checkpoint_multimodal_loads')}; cascade "
            f"complete: {c.get('cascade_complete')}; service answered: {c.get('service_answered')} "
            f"(same paths: {c.get('service_same_paths')}); nothing lost: {run['nothing_lost']}")


def markdown(result: dict) -> str:
    """The Markdown table of one harness invocation: one row per (seed, stage), then each
    run's checks."""
    lines = [f"Main job under chaos: `{result['command']}`", "",
             "| seed | stage | killed after (s) | on the node then | redone | replacement up (s) | "
             "stage s (undisturbed) | nothing lost |", "|---|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        ok = run["nothing_lost"]
        for r in run["stages"]["rows"]:
            where = r["running_on_node"]
            on_node = (f"tasks {_short(where['tasks'])}; actors {_short(where['actors'])}"
                       if r["inside_stage"] else "stage ended before the kill")
            lines.append(f"| {run['seed']} | {r['stage']} | {r['killed_after_s']} | {on_node} | "
                         f"{_redone(r)} | {r['replacement_up_s']} | {r['stage_s']} "
                         f"({r['undisturbed_stage_s']}) | {'yes' if ok else 'NO'} |")
    lines += [""] + [_checks_line(run) for run in result["runs"]]
    return "\n".join(lines) + "\n"


def nothing_lost(job: dict, checks: dict) -> bool:
    """The verdict: the job succeeded, every dataset equal, no product twice, outputs load."""
    flags = [job["succeeded"], checks["datasets_equal"],
             not any(checks.get("store_duplicates", {}).values()),
             checks.get("prediction_duplicates", 0) == 0, not checks["evaluation"].get("outside")]
    flags += [checks[k] is True for k in ("checkpoint_text_loads", "checkpoint_multimodal_loads",
                                          "cascade_complete", "service_answered") if k in checks]
    return all(flags)


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="one disturbed run per seed")
    p.add_argument("--sample-per-category", type=int, default=3, help="the main job's sample size")
    p.add_argument("--max-epochs", type=int, default=2, help="cap on every training run's epochs")
    p.add_argument("--stages", nargs="+", help="the main job's stages (default: all)")
    p.add_argument("--set", action="append", help="PipelineConfig override, passed on")
    p.add_argument("--workers", type=int, default=2, help="worker nodes (each killed in turn)")
    p.add_argument("--worker-cpus", type=float, default=2, help="logical CPUs per worker node")
    p.add_argument("--workdir", default="/tmp/chaos", help="run folders and the cluster's temp dir")
    p.add_argument("--baseline", help="an undisturbed run folder made with the same settings "
                   "(and its job record, baseline.json beside it) to reuse")
    p.add_argument("--seed-run", help="a folder copied into each run folder before its job "
                   "(e.g. catalog/products.parquet for runs whose --stages skip the catalogue)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="JSON/Markdown folder")
    p.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M%S"), help="names the result files")
    p.add_argument("--timeout", type=float, default=7200, help="seconds per job")
    p.add_argument("--recheck", metavar="JSON", help="no cluster: compare the run folders of an "
                   "earlier result JSON again (after a change to the checks) and rewrite it")
    return p.parse_args(argv)


def _stage_seconds(run: Path) -> dict:
    state = run / "pipeline.json"
    return json.loads(state.read_text()).get("stage_seconds", {}) if state.exists() else {}


def _prepare(run: Path, args: argparse.Namespace) -> None:
    """A fresh run folder, with ``--seed-run``'s files when given."""
    import shutil

    if run.exists():
        shutil.rmtree(run)
    if args.seed_run:
        shutil.copytree(args.seed_run, run)


def recheck(path: Path) -> dict:
    """Compare the run folders named in an earlier result JSON again; rewrite JSON and table."""
    result = json.loads(path.read_text())
    base = Path(result["settings"]["baseline"] or Path(result["settings"]["workdir"]) / "undisturbed")
    work = Path(result["settings"]["workdir"])
    for run in result["runs"]:
        name = Path(run["run"]).name
        logs = sorted(work.glob(f"{name}.job.log")) or sorted(
            work.glob(f"ray/session_*/logs/job-driver-chaos-{name}-*.log"))
        if logs:
            said = log_events(logs[-1].read_text(errors="replace"))
            for r in run["stages"]["rows"]:
                r["log_retried"] = said.get(r["stage"], {}).get("retried", {})
                r["log_objects_recovered"] = said.get(r["stage"], {}).get("objects_recovered", 0)
        run["checks"] = compare_runs(base, Path(run["run"]))
        job = {"succeeded": run["status"] == "SUCCEEDED"}
        run["nothing_lost"] = nothing_lost(job, run["checks"])
    result["rechecked"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    path.write_text(json.dumps(result, indent=2, default=str))
    path.with_suffix(".md").write_text(markdown(result))
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.recheck:
        return recheck(Path(args.recheck))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cluster = ChaosCluster(str(work / "ray"), worker_cpus=args.worker_cpus)
    result = {"command": "python benchmarks/chaos.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "settings": vars(args), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "load_average_start": os.getloadavg(), "runs": []}
    try:
        cluster.start(args.workers)
        print(f"[chaos] cluster up: head + {args.workers} workers, dashboard {cluster.dashboard}", flush=True)
        base = Path(args.baseline) if args.baseline else work / "undisturbed"
        if args.baseline:
            baseline_job = json.loads((base.parent / "baseline.json").read_text())
        else:
            print(f"[chaos] undisturbed run → {base}", flush=True)
            _prepare(base, args)
            baseline_job = run_job(cluster, str(base), entrypoint(str(base), args), None,
                                   timeout_s=args.timeout)
            baseline_job["retried"], baseline_job["state_api_error"] = retried_tasks(
                cluster, baseline_job["job_id"])
            (work / "baseline.json").write_text(json.dumps(baseline_job, indent=2))
        if not baseline_job["succeeded"]:
            raise RuntimeError(f"the undisturbed job failed:\n{baseline_job['log'][-3000:]}")
        result["undisturbed"] = {k: baseline_job[k] for k in ("status", "seconds", "submission_id")}
        result["undisturbed"]["stage_seconds"] = base_seconds = _stage_seconds(base)
        result["undisturbed"]["retried_attempts"] = len(baseline_job.get("retried", []))
        stages = STAGE_LINE.findall(baseline_job["log"])
        for seed in args.seeds:
            run = work / f"chaos-{seed}"
            kills = schedule(seed, stages, base_seconds)
            _prepare(run, args)
            print(f"[chaos] seed {seed} → {run}; kills: "
                  + ", ".join(f"{k.stage}+{k.after_s}s" for k in kills), flush=True)
            job = run_job(cluster, str(run), entrypoint(str(run), args), kills, seed, args.timeout,
                          min_workers=args.workers)
            (work / f"{run.name}.job.log").write_text(job["log"])
            retried, state_api_error = retried_tasks(cluster, job["job_id"])
            checks = compare_runs(base, run)
            record = {"seed": seed, "run": str(run), "status": job["status"],
                      "seconds": job["seconds"], "kills": job["kills"],
                      "stages": stage_rows(job, base_seconds, _stage_seconds(run), retried, run),
                      "checks": checks, "log_tail": job["log"][-2000:],
                      "state_api_error": state_api_error}
            record["nothing_lost"] = nothing_lost(job, checks)
            result["runs"].append(record)
            print(f"[chaos] seed {seed}: job {job['status']} in {job['seconds']} s; nothing lost: "
                  f"{record['nothing_lost']}", flush=True)
    finally:
        cluster.stop()
        result["load_average_end"] = os.getloadavg()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"chaos_{args.tag}.json").write_text(json.dumps(result, indent=2, default=str))
        if result["runs"]:
            (out / f"chaos_{args.tag}.md").write_text(markdown(result))
            print(markdown(result), flush=True)
        print(f"[chaos] → {out / f'chaos_{args.tag}.json'}", flush=True)
    return result


if __name__ == "__main__":
    main()
