"""Load test of the cascade service over real HTTP with real products.

Starts the service the way a user does (``prodcat serve`` in a subprocess, unless ``--url`` points
at a running one), sends test-split products (title, description and the product photo as
base64) in batches at a fixed concurrency, once per mode, and reports per mode: requests/s,
products/s, p50/p99 latency (ms), the escalation rate and the hF of the answers on the same
products. Results go to a JSON file and a "Serving" section appended to benchmarks/README.md.

  python benchmarks/serve_load.py --cascade runs/sample/cascade \\
      --products runs/sample/catalog/products.parquet --products-per-mode 512 --concurrency 4
  python benchmarks/serve_load.py --url http://127.0.0.1:8000 ...   # an already running service
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

from prodcat.core.runtime import free_port

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Serving (`benchmarks/serve_load.py`)"


def start_service(port: int, cascade: str, extra: list[str], log_path: Path) -> subprocess.Popen:
    """``prodcat serve`` in its own process group; returns once ``/healthz`` answers 200."""
    cmd = [sys.executable, "-m", "prodcat", "serve", "--port", str(port), "--set", f"cascade={cascade}"]
    for item in extra:
        cmd += ["--set", item]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prodcat serve exited with {proc.returncode}; see {log_path}")
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(2)
    stop_service(proc)
    raise TimeoutError(f"the service did not become healthy in 600 s; see {log_path}")


def stop_service(proc: subprocess.Popen) -> None:
    """SIGINT to the service's process group (it shuts Serve and Ray down), then wait."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def load_products(products_uri: str, split: str, n: int, seed: int) -> list[dict]:
    """``n`` labelled products of ``split`` (seeded sample) as API items with base64 images."""
    import pyarrow.compute as pc

    from prodcat.core import storage

    table = storage.read_table(products_uri, columns=["product_id", "title", "description",
                                                      "image_uri", "category_id", "split"])
    table = table.filter(pc.and_(pc.equal(table["split"], split), pc.is_valid(table["category_id"])))
    pick = np.sort(np.random.default_rng(seed).choice(table.num_rows, min(n, table.num_rows),
                                                      replace=False))
    items = []
    for row in table.take(pick).to_pylist():
        item = {"id": row["product_id"], "title": row["title"], "description": row["description"],
                "_label": row["category_id"]}
        if row["image_uri"] and Path(row["image_uri"]).is_file():
            item["image_base64"] = base64.b64encode(Path(row["image_uri"]).read_bytes()).decode()
        items.append(item)
    return items


def run_mode(url: str, mode: str, items: list[dict], batch: int, concurrency: int) -> dict:
    """Send ``items`` in batches of ``batch`` with ``concurrency`` clients; latency per request."""
    batches = [items[i:i + batch] for i in range(0, len(items), batch)]
    session = requests.Session()
    requests.post(f"{url}/v1/categorize?mode={mode}", timeout=300,   # warm-up (not measured)
                  json={"products": [{k: v for k, v in p.items() if k != "_label"} for p in batches[0]]})

    def send(chunk):
        body = {"products": [{k: v for k, v in p.items() if k != "_label"} for p in chunk]}
        start = time.perf_counter()
        r = session.post(f"{url}/v1/categorize?mode={mode}", json=body, timeout=600)
        return (time.perf_counter() - start) * 1000, r.status_code, r.json()

    started = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(send, batches))
    wall = time.perf_counter() - started
    latencies = np.array([r[0] for r in results])
    statuses = [r[1] for r in results]
    preds = [p for r in results if r[1] == 200 for p in r[2]["predictions"]]
    return {"mode": mode, "requests": len(batches), "products": len(items), "batch": batch,
            "concurrency": concurrency, "wall_s": round(wall, 2),
            "requests_per_s": round(len(batches) / wall, 2),
            "products_per_s": round(len(items) / wall, 1),
            "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 1),
                           "p99": round(float(np.percentile(latencies, 99)), 1),
                           "mean": round(float(latencies.mean()), 1)},
            "status_counts": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "escalated": sum(r[2].get("escalated", 0) for r in results if r[1] == 200),
            "predictions": {p["id"]: p["category_id"] for p in preds if p["status"] == 200},
            "stages": {s: sum(p["stage"] == s for p in preds) for s in ("text", "multimodal")}}


def score_modes(results: list[dict], items: list[dict], taxonomy_uri: str) -> None:
    """Add hF (``prodcat.core.metrics.hierarchical_prf``) of each mode's answers on the same products."""
    from prodcat.core import storage
    from prodcat.core.metrics import hierarchical_prf
    from prodcat.core.taxonomy import Taxonomy

    taxonomy = Taxonomy.from_json(storage.read_text(taxonomy_uri))
    true = np.array([taxonomy.node(p["_label"]) for p in items])
    for res in results:
        pred = np.array([taxonomy.node(res["predictions"][p["id"]]) if p["id"] in res["predictions"]
                         else 0 for p in items])
        res.update({k: round(100 * v, 2) for k, v in hierarchical_prf(taxonomy, true, pred).items()})
        res["escalation_rate"] = round(res["escalated"] / res["products"], 4)


def readme_section(results: list[dict], meta: dict) -> str:
    rows = ["| mode | requests/s | products/s | p50 latency (ms) | p99 latency (ms) | escalation "
            "| hF | hP | hR | statuses |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['mode']} | {r['requests_per_s']} | {r['products_per_s']} | "
                    f"{r['latency_ms']['p50']} | {r['latency_ms']['p99']} | "
                    f"{r['escalation_rate']:.1%} | {r['hF']} | {r['hP']} | {r['hR']} | "
                    f"{r['status_counts']} |")
    return "\n".join([
        SECTION, "",
        f"Measured {meta['date']} on {meta['machine']}, no GPU, shared with other jobs (1-minute "
        f"load average {meta.get('load_average')} before/after: figures are contended). The "
        f"service was started with `{meta['service']}`; {meta['products']} products of the "
        f"`{meta['split']}` split (title, description and the product photo, base64), "
        f"{meta['batch']} per request, {meta['concurrency']} concurrent clients, every mode on the "
        f"same products after one warm-up request. Cascade `{meta['cascade']}`: tau = "
        f"{meta['threshold']}, text model {meta['versions'].get('text')}, multimodal model "
        f"{meta['versions'].get('multimodal')}. Latency is per request (ms); hF/hP/hR in points.",
        "", *rows, "",
        f"Command: `{meta['command']}`. Raw results: `{meta['results']}`.", "",
        *bulk_lines(meta.get("bulk", []))])


def bulk_lines(folders: list[str]) -> list[str]:
    """A table of ``prodcat score`` runs from their ``_summary.json`` / ``_evaluation.json``."""
    if not folders:
        return []
    rows = ["### Bulk scoring (`prodcat score`, Ray Data)", "",
            "| run | rows | vectors | escalation | products/s (stage 1 / stage 2) | pipeline s "
            "| test hF (products) |", "|---|---|---|---|---|---|---|"]
    for item in folders:
        folder, _, label = item.partition("=")
        s = json.loads((ROOT / folder / "_summary.json").read_text())
        ev_path = ROOT / folder / "_evaluation.json"
        ev = json.loads(ev_path.read_text()) if ev_path.exists() else {}
        source = label or ("stored (`--features-from`)" if s.get("features_from") else "encoded from raw")
        per = s.get("stage_products_per_s", {})
        hf = f"{100 * ev['hF']:.2f} ({ev['products']})" if ev else "n/a"
        rows.append(f"| `{folder}` | {s['rows']:,} | {source} | {s['escalation_rate']:.2%} | "
                    f"{s['products_per_s']} ({per.get('text')} / {per.get('multimodal')}) | "
                    f"{s['pipeline_s']} | {hf} |")
    rows += ["", "products/s = rows scored / pipeline seconds (reading and writing excluded); "
             "stage 2's rate includes starting its actor pool (loading the encoders), which "
             "dominates when only a few hundred rows escalate. hF on the test split of "
             "`runs/sample/catalog/products.parquet`, in points."]
    return ["", *rows, ""]


def append_section(readme: Path, section: str) -> None:
    """Write ``section`` into ``readme``, replacing the section of an earlier run."""
    from prodcat.core.report import replace_section

    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    readme.write_text(replace_section(text, SECTION, section))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cascade", default="runs/sample/cascade", help="cascade.json or its folder")
    parser.add_argument("--products", default="runs/sample/catalog/products.parquet")
    parser.add_argument("--split", default="test")
    parser.add_argument("--products-per-mode", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8, help="products per request")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent clients")
    parser.add_argument("--modes", nargs="+", default=["cascade", "multimodal", "text"])
    parser.add_argument("--url", help="use this running service instead of starting one")
    parser.add_argument("--set", action="append", default=[], help="passed to prodcat serve --set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="benchmarks/results/serve_load.json")
    parser.add_argument("--readme", default="benchmarks/README.md", help="'' to skip the README")
    parser.add_argument("--bulk", nargs="*", default=[], metavar="FOLDER[=LABEL]",
                        help="prodcat score output folders to list in the section (LABEL: where "
                        "the vectors came from)")
    parser.add_argument("--append-only", metavar="RESULTS_JSON",
                        help="only (re)write the README section from an earlier run's results")
    args = parser.parse_args(argv)
    if args.append_only:
        saved = json.loads((ROOT / args.append_only).read_text())
        saved["meta"]["bulk"] = args.bulk or saved["meta"].get("bulk", [])
        append_section(ROOT / args.readme, readme_section(saved["results"], saved["meta"]))
        return 0

    items = load_products(args.products, args.split, args.products_per_mode, args.seed)
    proc, url = None, args.url
    out = ROOT / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    if not url:
        port = free_port()
        proc = start_service(port, args.cascade, args.set,
                             Path(os.environ.get("TMPDIR", "/tmp")) / "serve_load.service.log")
        url = f"http://127.0.0.1:{port}"
    try:
        model = requests.get(f"{url}/v1/model", timeout=30).json()
        load_before = os.getloadavg()[0]
        results = [run_mode(url, mode, items, args.batch, args.concurrency) for mode in args.modes]
        load_after = os.getloadavg()[0]
    finally:
        if proc is not None:
            stop_service(proc)
    taxonomy_uri = str(Path(args.products).parent / "taxonomy.json")
    score_modes(results, items, taxonomy_uri)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})",
            "load_average": [round(load_before, 1), round(load_after, 1)],
            "service": "prodcat serve" + "".join(f" --set {s}" for s in args.set) if proc else url,
            "products": len(items), "split": args.split, "batch": args.batch,
            "concurrency": args.concurrency, "cascade": args.cascade,
            "threshold": model.get("threshold"),
            "versions": {"text": model.get("text_stage", {}).get("version"),
                         "multimodal": model.get("multimodal_stage", {}).get("version")},
            "command": "python benchmarks/serve_load.py " + " ".join(argv or sys.argv[1:]),
            "results": args.output, "bulk": args.bulk}
    for r in results:
        r.pop("predictions")
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(json.dumps(results, indent=2))
    if args.readme:
        append_section(ROOT / args.readme, readme_section(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
