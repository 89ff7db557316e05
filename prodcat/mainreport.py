"""The main job's report: one Markdown file (with the stages' PNG plots) that a person can read
without opening code. Every figure is read from a file a stage wrote; a missing stage output is
said plainly in its section instead of failing the report."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _include(path: Path, folder: str) -> list[str]:
    """A stage's own Markdown report, headings pushed one level down, relative links re-rooted."""
    if not path.exists():
        return [f"_(not produced: {folder}/{path.name} is missing — did the stage run?)_"]
    text = path.read_text()
    text = re.sub(r"\]\((?!https?:|/|#)([^)]+)\)", lambda m: f"]({folder}/{m.group(1)})", text)
    text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)
    return [text.strip()]


def _round(value, digits: int = 3):
    return round(value, digits) if isinstance(value, float) else value


def _latest_embed_summary(out: Path) -> dict | None:
    files = sorted(glob.glob(str(out / "embeddings" / "summary-*.json")))
    return _json(Path(files[-1])) if files else None


def _throughput(out: Path) -> list[str]:
    lines = ["| stage | figure |", "|---|---|"]
    build = _json(out / "catalog" / "build_summary.json")
    if build:
        lines.append(f"| catalog build | {build['products']:,} products in {build['seconds']} s |")
    emb = _latest_embed_summary(out)
    if emb:
        per = ", ".join(f"{k} {v['products_per_s_per_actor']} products/s per actor"
                        for k, v in emb["encoders"].items())
        lines.append(f"| embed (last run) | {emb['embedded']:,} products, {emb['products_per_s']} "
                     f"products/s overall ({per}); {emb['skipped_already_embedded']:,} already in the store |")
    for name in ("text", "multimodal"):
        res = _json(out / "train" / name / "train_result.json")
        if res:
            lines.append(f"| train ({name}) | {res['seconds_per_epoch']:.2f} s/epoch, peak "
                         f"{res['peak_memory_mb']:.0f} MiB, val hF {res['metrics'].get('val_hF', 0):.4f} |")
    score = _json(out / "predictions" / "_summary.json")
    if score:
        stages = ", ".join(f"{k} {v} products/s" for k, v in score.get("stage_products_per_s", {}).items()
                           if v is not None)
        lines.append(f"| bulk scoring ({score.get('mode')}) | {score.get('rows', 0):,} rows, "
                     f"{score.get('products_per_s')} products/s overall ({stages}); escalation rate "
                     f"{score.get('escalation_rate')} at tau {_round(score.get('threshold'))} |")
    demo = _json(out / "serve_demo.json")
    if demo:
        ms = sorted(r["single_request_ms"] for r in demo["rows"])
        lines.append(f"| service (single-product requests) | median {ms[len(ms) // 2]} ms, max {ms[-1]} ms "
                     f"over {len(ms)} requests |")
    return lines


def _serve_section(out: Path) -> list[str]:
    demo = _json(out / "serve_demo.json")
    if not demo:
        return ["_(the service stage did not run)_"]
    lines = [f"The service was started on {demo['url']}, answered one batch request of "
             f"{len(demo['rows'])} real test-split products (HTTP {demo['batch_status']}, "
             f"{demo['batch_ms']} ms) and one request per product, then was stopped.", "",
             "| product | image | true category | predicted | stage | confidence | ms |",
             "|---|---|---|---|---|---|---|"]
    for r in demo["rows"]:
        conf = f"{r['confidence']:.2f}" if r["confidence"] is not None else "-"
        lines.append(f"| {r['title'][:60]} | {'yes' if r['has_image'] else 'no'} | {r['true_path']} | "
                     f"{r['predicted_path']} | {r['stage']} | {conf} | {r['single_request_ms']} |")
    return lines


def write_report(out: Path, timings: dict[str, float], config: dict) -> Path:
    """Write ``<out>/report.md`` from the stages' outputs; returns its path."""
    out = Path(out)
    state = _json(out / "pipeline.json") or {}
    seconds = {**state.get("stage_seconds", {}), **timings}
    size = "all products" if config.get("full") else (
        f"stratified sample: at most {config.get('sample_per_category')} products per (platform, "
        "Google category), chosen by a hash of product_id")
    lines = ["# prodcat main job report", "",
             f"Run folder `{out}`; size: {size}. Stage wall times (s): "
             + ", ".join(f"{k} {v}" for k, v in seconds.items()) + ".", "",
             "## Throughput of each stage", ""] + _throughput(out)
    lines += ["", "## Data and unified taxonomy", ""] + _include(out / "catalog" / "build_summary.md", "catalog")
    lines += ["", "## Evaluation: per-level metrics, leave-one-platform-out, baselines", ""]
    lines += _include(out / "eval" / "report.md", "eval")
    lines += ["", "## Two-stage cascade: hF against escalation rate", ""]
    lines += _include(out / "cascade" / "cascade_report.md", "cascade")
    lines += ["", "## Bulk scoring", ""]
    score = _json(out / "predictions" / "_summary.json")
    lines += (["```json", json.dumps(score, indent=2), "```"] if score
              else ["_(bulk scoring did not run)_"])
    lines += ["", "## The service, answering real products over HTTP", ""] + _serve_section(out)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
