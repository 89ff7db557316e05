"""Serve autoscaling on a multi-node Ray cluster on this machine: replicas and latency over time.

Starts a cluster the way tests/cluster does (``ray.cluster_utils.Cluster``: a head without CPUs
and two worker nodes with their own raylets), serves the cascade with short autoscaling delays,
and runs back to back, on the same cluster and the same products:

1. **autoscaled**: stages with ``min_replicas`` 1 and ``max_replicas`` ``--max-replicas``;
   ``--clients`` clients send requests of ``--batch`` products for ``--load-s`` seconds; one
   TextStage replica's process is killed (SIGKILL) ``--kill-at-s`` into the load; then
   ``--idle-s`` seconds without load, while the stages scale back down;
2. **fixed** (the plain alternative): the same service with one replica per stage, the same load.

Replicas per deployment are sampled every 0.5 s (``serve.status()``), each request's latency and
status is recorded. Writes ``benchmarks/serve_autoscale.json`` (config, samples, 5-s windows,
summary; committed) and ``benchmarks/serve_autoscale.png`` (replicas, latency and throughput over
time; a local output, not committed: ``--plot-only`` redraws it from the JSON); ``--readme``
rewrites its section of ``benchmarks/README.md``.

  python benchmarks/serve_autoscale.py --cascade runs/sample/cascade \\
      --products runs/sample/catalog/products.parquet --readme
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests

from prodcat.core.runtime import free_port

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Serve autoscaling (`benchmarks/serve_autoscale.py`)"
DEPLOYMENTS = ("CategorizeIngress", "TextStage", "MultimodalStage")
FAST_SERVE_METRICS = {"RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
                      "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5"}


def start_cluster(workers: int, cpus: int):
    """A head without CPUs and ``workers`` nodes of ``cpus`` logical CPUs; the driver connects."""
    from ray.cluster_utils import Cluster

    os.environ.update(FAST_SERVE_METRICS)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_port": free_port(),
        "object_store_memory": 300 * 1024**2})
    for _ in range(workers):
        cluster.add_node(num_cpus=cpus, object_store_memory=300 * 1024**2)
    cluster.wait_for_nodes()
    cluster.connect()
    return cluster


def app_args(cascade: str, max_replicas: int, fixed: bool) -> dict:
    scale = ({"min_replicas": 1, "max_replicas": 1} if fixed else
             {"min_replicas": 1, "max_replicas": max_replicas, "target_ongoing_requests": 2,
              "upscale_delay_s": 2, "downscale_delay_s": 10, "look_back_period_s": 5})
    stage = {"num_cpus": 0.25, "device": "cpu", "max_batch_size": 16, "torch_threads": 1, **scale}
    return {"cascade": cascade, "ingress": {"num_cpus": 0, "min_replicas": 1, "max_replicas": 1,
                                            "max_ongoing_requests": 64, "max_queued_requests": 256},
            "text_stage": stage, "multimodal_stage": stage}


def replicas() -> dict[str, int]:
    from ray import serve

    app = serve.status().applications.get("prodcat")
    return {d: (app.deployments[d].replica_states.get("RUNNING", 0)
                if app and d in app.deployments else 0) for d in DEPLOYMENTS}


class Load:
    """``clients`` threads posting batches of products back to back until stopped."""

    def __init__(self, url: str, items: list[dict], clients: int, batch: int, t0: float) -> None:
        self.url, self.items, self.batch, self.t0 = url, items, batch, t0
        self.stop = threading.Event()
        self.records: list[dict] = []
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                        for i in range(clients)]
        for t in self.threads:
            t.start()

    def _client(self, i: int) -> None:
        session, k = requests.Session(), i * 97
        while not self.stop.is_set():
            chunk = [self.items[(k + j) % len(self.items)] for j in range(self.batch)]
            k += self.batch
            start = time.time()
            try:
                r = session.post(f"{self.url}/v1/categorize", timeout=120, json={"products": chunk})
                status = str(r.status_code)
            except requests.RequestException as err:
                status = type(err).__name__
            self.records.append({"t": round(start - self.t0, 3),
                                 "latency_ms": round(1000 * (time.time() - start), 1), "status": status})

    def end(self) -> list[dict]:
        self.stop.set()
        for t in self.threads:
            t.join(180)
        return sorted(self.records, key=lambda r: r["t"])


def kill_a_replica(address: str, deployment: str) -> int:
    from ray.util.state import list_actors

    actor = next(a for a in list_actors(address=address, limit=10_000, filters=[("state", "=", "ALIVE")])
                 if a.class_name.endswith(f":{deployment}"))
    os.kill(actor.pid, signal.SIGKILL)
    return actor.pid


def run_phase(name: str, url: str, cascade: str, items: list[dict], args, address: str) -> dict:
    """Deploy, load, (kill), idle; returns the phase's samples, requests and events."""
    from ray import serve

    from prodcat.pipeline.demo import wait_healthy
    from prodcat.serve.app import build_app

    fixed = name == "fixed"
    serve.run(build_app(app_args(cascade, args.max_replicas, fixed)), name="prodcat", route_prefix="/")
    wait_healthy(url, timeout_s=600)
    t0 = time.time()
    samples, events = [], {"load_start": 0.0}
    load = Load(url, items, args.clients, args.batch, t0)
    killed = None
    while time.time() - t0 < args.load_s:
        if not fixed and killed is None and time.time() - t0 >= args.kill_at_s:
            killed = kill_a_replica(address, "TextStage")
            events["replica_killed"] = round(time.time() - t0, 2)
        samples.append({"t": round(time.time() - t0, 2), **replicas()})
        time.sleep(0.5)
    events["load_end"] = round(time.time() - t0, 2)
    records = load.end()
    idle_until = time.time() + (0 if fixed else args.idle_s)
    while time.time() < idle_until:
        samples.append({"t": round(time.time() - t0, 2), **replicas()})
        time.sleep(0.5)
    return {"phase": name, "samples": samples, "requests": records, "events": events,
            "killed_pid": killed, "args": app_args(cascade, args.max_replicas, fixed)}


def windows(records: list[dict], end: float, width: float = 5.0) -> list[dict]:
    out = []
    for start in np.arange(0, end, width):
        inside = [r for r in records if start <= r["t"] < start + width]
        ok = [r["latency_ms"] for r in inside if r["status"] == "200"]
        out.append({"t": float(start), "requests_per_s": round(len(inside) / width, 2),
                    "p50_ms": round(float(np.percentile(ok, 50)), 1) if ok else None,
                    "p95_ms": round(float(np.percentile(ok, 95)), 1) if ok else None,
                    "failed": sum(r["status"] != "200" for r in inside)})
    return out


def summarize(phase: dict, batch: int) -> dict:
    load_end = phase["events"]["load_end"]
    records = [r for r in phase["requests"] if r["t"] < load_end]
    ok = np.array([r["latency_ms"] for r in records if r["status"] == "200"])
    second_half = np.array([r["latency_ms"] for r in records if r["status"] == "200"
                            and r["t"] >= load_end / 2])
    samples = phase["samples"]
    peak = {d: max(s[d] for s in samples) for d in DEPLOYMENTS}
    first_at_peak = {d: next((s["t"] for s in samples if s[d] == peak[d]), None) for d in DEPLOYMENTS}
    after = [s for s in samples if s["t"] > load_end]
    back = {d: next((s["t"] - load_end for s in after if s[d] <= 1), None) for d in DEPLOYMENTS}
    killed, replaced = phase["events"].get("replica_killed"), None
    if killed is not None:   # Serve notices the death (the count dips), then starts a replacement
        before = max(x["TextStage"] for x in samples if x["t"] <= killed)
        dip = next((x["t"] for x in samples if x["t"] > killed and x["TextStage"] < before), None)
        if dip is not None:
            replaced = next((x["t"] - killed for x in samples if x["t"] > dip and x["TextStage"] >= before), None)
    return {"requests": len(records), "failed": sum(r["status"] != "200" for r in records),
            "killed_replica_replaced_after_s": round(replaced, 1) if replaced is not None else None,
            "products_per_s": round(len(ok) * batch / load_end, 1),
            "p50_ms": round(float(np.percentile(ok, 50)), 1), "p95_ms": round(float(np.percentile(ok, 95)), 1),
            "p50_ms_second_half": round(float(np.percentile(second_half, 50)), 1) if len(second_half) else None,
            "peak_replicas": peak, "peak_reached_at_s": first_at_peak,
            "back_to_one_after_load_s": back}


def plot(result: dict, out: Path) -> None:
    from prodcat.core.report import figure, save_png

    auto, fixed = result["autoscaled"], result["fixed"]
    fig, axes = figure(3, 1, figsize=(9, 9), sharex=True)
    t = [s["t"] for s in auto["samples"]]
    for d, style in zip(DEPLOYMENTS[1:], ("-", "--")):
        axes[0].step(t, [s[d] for s in auto["samples"]], style, where="post", label=f"{d} (autoscaled)")
    axes[0].set_ylabel("running replicas")
    axes[0].set_title("Serve autoscaling under load (3-node cluster on one 2-core machine)")
    for name, phase, colour in (("autoscaled", auto, "C0"), ("fixed, 1 replica per stage", fixed, "C3")):
        req = phase["requests"]
        axes[1].scatter([r["t"] for r in req], [r["latency_ms"] for r in req], s=3, alpha=0.25, color=colour)
        w = phase["windows"]
        axes[1].plot([x["t"] + 2.5 for x in w], [x["p50_ms"] for x in w], color=colour, label=f"p50, {name}")
        axes[2].plot([x["t"] + 2.5 for x in w], [x["requests_per_s"] for x in w], color=colour, label=name)
    axes[1].set_ylabel("latency per request (ms)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("requests/s (5-s windows)")
    axes[2].set_xlabel("seconds since the load started")
    for ax in axes:
        for key, colour in (("replica_killed", "k"), ("load_end", "grey")):
            if key in auto["events"]:
                ax.axvline(auto["events"][key], color=colour, linestyle=":", linewidth=1)
        ax.legend(loc="upper right", fontsize=8)
    marks = axes[0].get_xaxis_transform()       # x in data, y in axes fraction
    if "replica_killed" in auto["events"]:
        axes[0].text(auto["events"]["replica_killed"], 0.05, " TextStage replica killed", fontsize=8,
                     transform=marks)
    axes[0].text(auto["events"]["load_end"], 0.05, " load ends", fontsize=8, transform=marks)
    save_png(fig, str(out))


def readme_section(result: dict) -> str:
    a, f = result["autoscaled"]["summary"], result["fixed"]["summary"]
    meta = result["meta"]
    rows = ["| run | requests | failed | products/s | p50 (ms) | p95 (ms) | p50, 2nd half of load (ms) "
            "| peak replicas (text / multimodal) |", "|---|---|---|---|---|---|---|---|"]
    for name, s in (("autoscaled (1 to %d per stage)" % meta["max_replicas"], a), ("fixed, 1 per stage", f)):
        rows.append(f"| {name} | {s['requests']} | {s['failed']} | {s['products_per_s']} | {s['p50_ms']} | "
                    f"{s['p95_ms']} | {s['p50_ms_second_half']} | {s['peak_replicas']['TextStage']} / "
                    f"{s['peak_replicas']['MultimodalStage']} |")
    return "\n".join([
        SECTION, "",
        f"Measured {meta['date']} on {meta['machine']} (1-minute load average {meta['load_average']} "
        "before/after: the machine was shared, figures are contended). A Ray cluster of a head "
        "(0 CPUs) and two worker nodes (2 logical CPUs each) on this one machine "
        "(`ray.cluster_utils.Cluster`); the cascade " + meta.get("cascade_label", f"`{meta['cascade']}`") + "; "
        f"{meta['clients']} clients sending {meta['batch']} products per request (title, "
        f"description, photo) for {meta['load_s']} s; autoscaling `target_ongoing_requests` 2, "
        "`upscale_delay_s` 2, `downscale_delay_s` 10, `look_back_period_s` 5; one TextStage "
        f"replica's process killed (SIGKILL) {meta['kill_at_s']} s into the load. Then the same "
        "load against one replica per stage (the plain alternative), back to back.", "",
        *rows, "",
        f"Autoscaled: the text stage went from 1 to {a['peak_replicas']['TextStage']} replicas "
        f"({round(a['peak_reached_at_s']['TextStage'])} s into the load); after the kill Serve "
        f"counted one replica less and had a replacement running {a['killed_replica_replaced_after_s']} s "
        f"after the kill, with {a['failed']} failed requests (stage calls that hit the dead "
        "replica are sent again); after the load it was back to 1 replica "
        f"{round(a['back_to_one_after_load_s']['TextStage'])} s later. The multimodal stage peaked "
        f"at {a['peak_replicas']['MultimodalStage']}: with these products few escalate, so its "
        "ongoing requests stayed under the target (tests/cluster drives both stages to their "
        "maximum with the tiny test cascade, which escalates about half). Starting a replica takes "
        "CPU from the replicas already serving on this 2-core machine, which is why latency rises "
        "while the stage scales up; once scaled, the p50 latency ratio fixed / autoscaled over the "
        f"second half of the load is {result['ratio_p50_second_half']}.", "",
        "Plot of replicas and latency over time: `benchmarks/serve_autoscale.png`, drawn by the "
        "script next to its JSON and not committed (`python benchmarks/serve_autoscale.py "
        "--plot-only` redraws it from the JSON).", "",
        f"Command: `{meta['command']}`. Raw results: `benchmarks/serve_autoscale.json`.", ""])


def write_section(readme: Path, section: str) -> None:
    """Write ``section`` into ``readme``, replacing the section of an earlier run."""
    from prodcat.core.report import replace_section

    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    readme.write_text(replace_section(text, SECTION, section))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cascade", help="cascade folder (cascade.json), local or s3://")
    parser.add_argument("--products", help="product table (labels not needed)")
    parser.add_argument("--cascade-label", help="how the README names the cascade (default: its path)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=256, help="distinct products sent, cycled")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4, help="products per request")
    parser.add_argument("--max-replicas", type=int, default=3)
    parser.add_argument("--load-s", type=float, default=90)
    parser.add_argument("--kill-at-s", type=float, default=45)
    parser.add_argument("--idle-s", type=float, default=60)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "serve_autoscale"))
    parser.add_argument("--readme", action="store_true", help="rewrite the section in benchmarks/README.md")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the PNG (and with --readme the section) from the JSON of a run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.plot_only:
        result = json.loads(out.with_suffix(".json").read_text())
        for name in ("autoscaled", "fixed"):
            result[name]["summary"] = summarize(result[name], result["meta"]["batch"])
        if args.cascade_label:
            result["meta"]["cascade_label"] = args.cascade_label
        out.with_suffix(".json").write_text(json.dumps(result, separators=(",", ":")))
        plot(result, out.with_suffix(".png"))
        if args.readme:
            write_section(ROOT / "benchmarks" / "README.md", readme_section(result))
        return 0

    if not (args.cascade and args.products):
        parser.error("--cascade and --products are required (except with --plot-only)")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ray import serve
    from serve_load import load_products

    items = [{k: v for k, v in p.items() if k != "_label"}
             for p in load_products(args.products, args.split, args.n, seed=0)]
    load_before = [round(x, 1) for x in os.getloadavg()]
    cluster = start_cluster(workers=2, cpus=2)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    url = f"http://127.0.0.1:{port}"
    result = {}
    try:
        for name in ("autoscaled", "fixed"):
            phase = run_phase(name, url, args.cascade, items, args, cluster.address)
            phase["windows"] = windows(phase["requests"], phase["events"]["load_end"])
            phase["summary"] = summarize(phase, args.batch)
            result[name] = phase
            print(json.dumps({name: phase["summary"]}), flush=True)
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()
        cluster.shutdown()
    a, f = result["autoscaled"]["summary"], result["fixed"]["summary"]
    result["ratio_p50_second_half"] = (round(f["p50_ms_second_half"] / a["p50_ms_second_half"], 2)
                                       if a["p50_ms_second_half"] and f["p50_ms_second_half"] else None)
    result["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU",
        "load_average": [load_before[0], round(os.getloadavg()[0], 1)],
        "cascade": args.cascade, "cascade_label": args.cascade_label or f"`{args.cascade}`",
        "clients": args.clients, "batch": args.batch,
        "max_replicas": args.max_replicas, "load_s": args.load_s, "kill_at_s": args.kill_at_s,
        "idle_s": args.idle_s, "products": len(items),
        "command": "python benchmarks/serve_autoscale.py " + " ".join(argv or sys.argv[1:])}
    out.with_suffix(".json").write_text(json.dumps(result, separators=(",", ":")))
    plot(result, out.with_suffix(".png"))
    print(json.dumps({"ratio_p50_second_half": result["ratio_p50_second_half"],
                      "json": str(out.with_suffix(".json")), "png": str(out.with_suffix(".png"))}))
    if args.readme:
        write_section(ROOT / "benchmarks" / "README.md", readme_section(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
