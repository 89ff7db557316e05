"""Ray's own client against a real cluster: ``ray start --head`` plus a second node on this
machine (non-default ports, their own ``--temp-dir``), then, with ``ray job submit
--working-dir``, a sweep (stopped mid-way with ``ray job stop``, resubmitted with ``--resume``) and
a bulk-scoring run of a cascade folder; both results are checked. The
commands are the README's ("Scaling to a cluster"). The cluster's processes are found by its temp dir and ended by pid."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from prodcat.core import storage
from prodcat.core.runtime import free_ports
from tests.fixtures.store import write_synthetic_store
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH="")
    return env


def ray(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``ray`` CLI of this environment."""
    done = subprocess.run([str(BIN / "ray"), *args], env=_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if check and done.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} → {done.returncode}\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
    return done


NODE_PORTS = ("metrics-export-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "runtime-env-agent-port", "node-manager-port", "object-manager-port")


def _node_ports(ports: list[int]) -> list[str]:
    return [f"--{name}={port}" for name, port in zip(NODE_PORTS, ports, strict=True)]


@pytest.fixture(scope="module")
def ray_start_cluster():
    """``ray start --head`` (no CPUs, dashboard on 127.0.0.1) and a worker node (2 CPUs), every
    port chosen free, their own temp dir; yields the job server's address. Ends exactly the
    processes of this cluster (found by the temp dir in their command line), by pid."""
    temp = tempfile.mkdtemp(prefix="rj", dir=os.environ.get("TMPDIR", "/tmp"))
    # every port of both nodes drawn at once, all distinct (two separate draws can coincide)
    gcs, dashboard, client, *nodes = free_ports(3 + 2 * len(NODE_PORTS))
    try:
        ray("start", "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
            "--dashboard-host=127.0.0.1", "--num-cpus=0", f"--temp-dir={temp}",
            f"--ray-client-server-port={client}", "--disable-usage-stats",
            *_node_ports(nodes[:len(NODE_PORTS)]))
        ray("start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2", f"--temp-dir={temp}",
            "--disable-usage-stats", *_node_ports(nodes[len(NODE_PORTS):]))
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        end_processes_of(temp)


def processes_of(temp: str) -> list[int]:
    """Pids of the processes whose command line names ``temp`` (this cluster's temp dir)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if temp.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def end_processes_of(temp: str, grace_s: float = 10) -> None:
    """SIGTERM the cluster's processes (not ``ray stop``: that would stop every Ray instance on
    the machine), then SIGKILL what is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_of(temp):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        while processes_of(temp) and time.time() < deadline:
            time.sleep(0.5)


def _status(address: str, job: str) -> str:
    """The job's status through Ray's job SDK (``ray job status`` prints the same)."""
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(address).get_job_status(job).value)


def test_ray_job_submit_sweep_stop_resume_and_scoring(ray_start_cluster, cascade, tmp_path, report):
    address = ray_start_cluster
    products, taxonomy = synthetic_products(240, platforms=("alpha", "beta"))
    storage.write_table(products, str(tmp_path / "cat/products.parquet"))
    storage.write_text(str(tmp_path / "cat/taxonomy.json"), taxonomy.to_json())
    write_synthetic_store(products, taxonomy, str(tmp_path / "emb"), dims={"text": 16, "image": 8})
    run = uuid.uuid4().hex[:6]
    sweep = ["python", "-m", "prodcat.tune", "--storage", str(tmp_path / "tune"), "--name", "smoke",
             "--quiet"]
    data = ["--set", f"data.products={tmp_path}/cat/products.parquet",
            "--set", f"data.embeddings={tmp_path}/emb"]
    submit = ["job", "submit", f"--address={address}", f"--working-dir={REPO}"]

    first, scoring = f"prodcat-sweep-{run}", f"prodcat-score-{run}"
    src, out = tmp_path / "score_in.parquet", tmp_path / "pred"
    pq.write_table(cascade["products"], src)
    t0 = time.time()
    # six epochs, not the smoke space's two: the stop lands after the first checkpoint, and two
    # epochs left so little after it that both trials could finish before `ray job stop` did
    ray(*submit, f"--submission-id={first}", "--no-wait", "--",
        *sweep, "--space", "tune/spaces/smoke.yaml", *data, "--set", "optim.epochs=6")
    checkpoints = f"{tmp_path}/tune/smoke/trials/*/ray/train/checkpoint_*/train_state.json"
    deadline = time.time() + 300
    while not glob.glob(checkpoints):
        assert time.time() < deadline and _status(address, first) in ("PENDING", "RUNNING"), \
            ray("job", "logs", f"--address={address}", first, check=False).stdout[-3000:]
        time.sleep(1)
    stopped_at = time.time()
    ray("job", "stop", f"--address={address}", first, timeout=120)
    assert _status(address, first) == "STOPPED"

    second = f"prodcat-sweep-{run}-resume"
    done = ray(*submit, f"--submission-id={second}", "--", *sweep, "--resume", timeout=600)
    assert _status(address, second) == "SUCCEEDED", done.stdout[-3000:]
    summary = json.loads((tmp_path / "tune/smoke/report/summary.json").read_text())
    assert summary["trials"] == 2 and not summary["interrupted"]
    assert [f["resumed"] for f in summary["fits"]][-1] is True
    resumed = {}
    for path in glob.glob(f"{tmp_path}/tune/smoke/trials/*/attempts.json"):
        attempts = json.loads(Path(path).read_text())
        resumed[Path(path).parent.name] = [a["resume_from_epoch"] for a in attempts]
    assert any(len(a) == 2 and a[1] is not None for a in resumed.values()), resumed

    done = ray(*submit, f"--submission-id={scoring}", "--", "python", "-m", "prodcat", "score",
               "--model", str(Path(cascade["cascade"]).parent), "--input", str(src),
               "--output", str(out), "--set", "text_num_cpus=0.5", "--set", "multimodal_num_cpus=0.5",
               timeout=600, check=False)
    assert _status(address, scoring) == "SUCCEEDED", done.stdout[-3000:]
    from prodcat.score.parts import read_predictions

    table = read_predictions(str(out))
    assert table.num_rows == cascade["products"].num_rows
    assert sorted(table["product_id"].to_pylist()) == sorted(cascade["products"]["product_id"].to_pylist())
    score_summary = json.loads((out / "_summary.json").read_text())
    assert score_summary["complete"] and score_summary["rows"] == table.num_rows
    report.append({"test": "ray job submit", "address": address,
                   "jobs": {"sweep": first, "sweep_resumed": second, "scoring": scoring},
                   "sweep_stopped_after_s": round(stopped_at - t0, 1),
                   "trial_attempts_resume_from_epoch": resumed,
                   "sweep": {k: summary.get(k) for k in ("trials", "stops", "wall_seconds")},
                   "scoring_rows_in": cascade["products"].num_rows, "scoring_rows_out": table.num_rows})
