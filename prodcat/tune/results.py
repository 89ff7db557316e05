"""The sweep's report: every trial in a table sorted by validation hF, the best config as a file
``prodcat train --config`` accepts, an evaluation config for it, a plot and a summary.

Objective: per trial, the best epoch's ``val_hF`` (``best_val_hF``, what ``prodcat train`` exports
as ``<output>/model``); ASHA compares the current epoch's ``val_hF`` at its rungs. A trial's
``stop`` says why it ended: ``asha`` (stopped by the scheduler at one of its rungs), ``patience``
(the loop's own early stopping), ``completed``, ``budget`` (cut by ``sweep.time_budget_s``),
``error``, or ``unfinished`` (the sweep was interrupted; ``--resume`` continues it).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import pandas as pd

from prodcat.core import storage
from prodcat.core.config import dump_config
from prodcat.core.console import say
from prodcat.core.report import figure, markdown_table, png_bytes
from prodcat.evaluate.config import EvaluateConfig
from prodcat.train.config import TrainConfig, apply_overrides

OBJECTIVE = "best_val_hF"
FILES = ("trials.csv", "trials.md", "trials.png", "best_config.yaml", "evaluate_best.yaml",
         "summary.json")


def stop_reason(error: Any, status: str, epochs: int, planned: int, last: dict, patience: int,
                rungs: set[int]) -> str:
    """Why a trial ended (the ``stop`` column): ``epochs`` run of ``planned``, its ``last`` report,
    the loop's ``patience``, ASHA's ``rungs``."""
    if error is not None or status == "ERROR":
        return "error"
    if status not in ("TERMINATED", ""):
        return "unfinished"  # pending or running when the sweep was interrupted
    if epochs >= planned:
        return "completed"
    if last.get("epoch", -1) - last.get("best_epoch", -1) >= patience:
        return "patience"
    return "asha" if epochs in rungs else "budget"  # ASHA stops only at its rungs


#: short names of searched fields in a trial's description (others: the field's last name)
SHORT = {"model.hidden_dim": "h", "model.dropout": "dropout ", "model.teacher_forcing": "tf ",
         "model.label_prior_scale": "prior×", "model.level_weights": "level weights ",
         "optim.lr": "lr ", "optim.weight_decay": "wd ", "optim.epochs": "epochs ",
         "optim.batch_size": "batch "}


def describe(params: dict[str, Any]) -> str:
    """A trial's sampled values in a few words: names for categorical values (``early, hard,
    text+image``), short labels for numbers (``h256, lr 1.2e-03``)."""
    words = []
    for key, value in params.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            words.append("+".join(value))
        elif isinstance(value, str):
            words.append(value if key != "model.label_prior" else f"prior {value}")
        elif isinstance(value, bool):
            words.append(f"{key.rsplit('.', 1)[-1]} {'on' if value else 'off'}")
        elif value is None:
            words.append(f"{SHORT.get(key, key.rsplit('.', 1)[-1] + ' ').strip()} default")
        else:
            words.append(f"{SHORT.get(key, key.rsplit('.', 1)[-1] + ' ')}{_number(value)}")
    return ", ".join(words)


def _number(value: Any) -> str:
    if isinstance(value, float) and value and (abs(value) < 1e-2 or abs(value) >= 1e4):
        return f"{value:.1e}"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ",".join(_number(v) for v in value) + "]"
    return str(value)


def asha_rungs(spec) -> set[int]:
    """The epochs at which ASHA may stop a trial: grace_period * reduction_factor**k < max_t."""

    asha, top = spec.settings.asha, spec.max_epochs
    rungs, t = set(), float(asha.grace_period)
    while t < top:
        rungs.add(int(round(t)))
        t *= asha.reduction_factor
    return rungs


def trial_rows(spec, grid, statuses: dict[str, str] | None = None
               ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, dict]]:
    """``(table, histories, params)``: one row per trial, sorted by the objective (best first;
    errors last); each trial's per-epoch metrics and its sampled values, by trial id.
    ``statuses``: Tune's status per trial id as saved in the experiment state."""
    base = spec.base
    keys = list(spec.space.params)
    rows, histories, sampled = [], {}, {}
    statuses = statuses or {}
    rungs = asha_rungs(spec)
    for result in grid:
        metrics = dict(result.metrics or {})
        params = {k: result.config.get(k) for k in keys} if result.config else {}
        trial_id = metrics.get("trial_id") or (result.path or "").rstrip("/").rsplit("trial_", 1)[-1]
        sampled[trial_id] = params
        history = result.metrics_dataframe
        if history is not None and len(history):
            histories[trial_id] = history
        # epochs from the loop's own counter: a resumed trial restarts Tune's training_iteration
        epochs = int(metrics["epoch"]) + 1 if metrics.get("epoch") is not None else 0
        planned = int(params.get("optim.epochs") or base["optim"]["epochs"])
        patience = int(params.get("optim.patience") or base["optim"]["patience"])
        rows.append({
            "trial_id": trial_id,
            "stop": stop_reason(result.error, statuses.get(trial_id, ""), epochs, planned, metrics,
                                 patience, rungs),
            OBJECTIVE: metrics.get(OBJECTIVE, metrics.get(spec.settings.metric)),
            "val_hF_last": metrics.get(spec.settings.metric), "epochs": epochs, "planned_epochs": planned,
            "best_epoch": metrics.get("best_epoch"), "time_s": metrics.get("time_total_s"),
            **{k: _cell(v) for k, v in params.items()},
            "error": (str(result.error).splitlines() or [""])[0][:200] if result.error else "",
        })
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(OBJECTIVE, ascending=False, na_position="last", kind="stable")
        table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True), histories, sampled


def _cell(value: Any) -> Any:
    """Lists as compact text so CSV and Markdown keep one cell per value."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def trials_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """The trials table as Markdown (:func:`prodcat.core.report.markdown_table`)."""
    table = table.convert_dtypes()          # whole-number float columns (with blanks) → integers
    rows = table.astype(object).where(table.notna(), None).itertuples(index=False)
    return markdown_table(list(table.columns), rows, digits) + "\n"


def best_config(spec, params: dict):
    """The base config with the best trial's values: ``prodcat train --config`` reads it as is.
    Its output is ``<experiment>/best`` (a fresh run folder: the base's output may hold another
    run, which the same output + name would resume)."""

    return apply_overrides(TrainConfig.model_validate(spec.base),
                           {**params, "output": storage.join(spec.uri, "best"), "name": "train"})


def evaluate_config(config) -> dict:
    """An ``EvaluateConfig`` (as a dict) that trains ``config`` in-platform and leave-one-platform-
    out, in Ray Train's local mode like ``configs/evaluate.default.yaml``."""

    train = apply_overrides(config, {"scaling.num_workers": 0, "scaling.torch_threads": 1})
    name = "+".join(config.model.modalities)
    return EvaluateConfig.model_validate({
        "train": train.model_dump(mode="json"),
        "grid": {"fusions": [config.model.fusion], "maskings": [config.model.masking],
                 "modalities": {name: list(config.model.modalities)}},
        "protocols": ["in_platform", "lopo"], "references": [],
        "output": storage.join(config.output, "evaluate_best")}).model_dump(mode="json")


def plot(table: pd.DataFrame, histories: dict[str, pd.DataFrame], metric: str, title: str) -> bytes:
    """PNG: per-epoch ``metric`` of every trial (ASHA-stopped dashed) and each trial's objective
    against its wall time (s), coloured by fusion."""
    import matplotlib.pyplot as plt

    fusions = sorted(table["model.fusion"].dropna().unique()) if "model.fusion" in table else []
    colours = {f: plt.get_cmap("tab10")(i) for i, f in enumerate(fusions)}
    fig, (left, right) = figure(1, 2, figsize=(12, 4.5))
    for row in table.to_dict("records"):  # (itertuples would rename the dotted columns)
        history = histories.get(row["trial_id"])
        colour = colours.get(row.get("model.fusion"), "tab:blue")
        if history is not None and metric in history:
            left.plot(history["training_iteration"], history[metric], color=colour, alpha=0.8,
                      linestyle="--" if row["stop"] == "asha" else "-", marker=".")
        if row[OBJECTIVE] is not None and not pd.isna(row[OBJECTIVE]):
            right.scatter(row["time_s"], row[OBJECTIVE], color=colour, s=30,
                          marker="x" if row["stop"] == "asha" else "o")
    left.set(xlabel="epoch", ylabel=f"validation {metric}", title="learning curves (dashed: ASHA-stopped)")
    right.set(xlabel="trial wall time (s)", ylabel=f"best validation {metric}",
              title="objective vs trial time (x: ASHA-stopped)")
    for f, c in colours.items():
        right.scatter([], [], color=c, label=f)
    if colours:
        right.legend(title="fusion", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return png_bytes(fig)


def write_report(spec, grid, fit_seconds: float | None, resumed: bool = False,
                 statuses: dict[str, str] | None = None,
                 progress: Callable[[str], None] = say) -> dict:
    """Write the files of :data:`FILES` to ``<experiment>/report``; returns the summary.
    ``fit_seconds``: wall time of the ``Tuner.fit`` just done, added to the record of fits
    (None: a report rebuilt from storage, no new fit)."""
    out = storage.join(spec.uri, "report")
    table, histories, sampled = trial_rows(spec, grid, statuses)
    storage.write_text(storage.join(out, "trials.csv"), table.to_csv(index=False))
    storage.write_text(storage.join(out, "trials.md"), trials_markdown(table))
    storage.write_bytes(storage.join(out, "trials.png"), plot(
        table, histories, spec.settings.metric, f"sweep {spec.name}: {len(table)} trials"))
    summary_path = storage.join(out, "summary.json")
    previous = json.loads(storage.read_text(summary_path)) if storage.exists(summary_path) else {}
    fits = previous.get("fits", [])
    if fit_seconds is not None:
        fits = fits + [{"seconds": round(fit_seconds, 1), "resumed": resumed,
                        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]
    stops = table["stop"].value_counts().to_dict() if len(table) else {}
    summary: dict[str, Any] = {
        "name": spec.name, "experiment": spec.uri, "trials": int(len(table)),
        "interrupted": bool(stops.get("unfinished")),
        "stops": {k: int(v) for k, v in stops.items()}, "fits": fits,
        "wall_seconds": round(sum(f["seconds"] for f in fits), 1), "objective": OBJECTIVE,
        "files": {name: storage.join(out, name) for name in FILES}}
    scored = table.dropna(subset=[OBJECTIVE]) if len(table) else table
    if len(scored):
        top = scored.iloc[0]
        params = sampled[top["trial_id"]]
        config = best_config(spec, params)
        header = (f"# Best of Ray Tune sweep {spec.name!r} ({spec.uri}): trial {top['trial_id']}, "
                  f"{OBJECTIVE}={top[OBJECTIVE]:.4f} after {top['epochs']} epochs.\n"
                  f"#   prodcat train --config {storage.join(out, 'best_config.yaml')}\n")
        storage.write_text(storage.join(out, "best_config.yaml"), header + dump_config(config))
        storage.write_text(storage.join(out, "evaluate_best.yaml"),
                           "# prodcat evaluate --config <this file>: the sweep's best config, "
                           "in-platform and leave-one-platform-out\n"
                           + dump_config_dict(evaluate_config(config)))
        summary["best"] = {"trial_id": top["trial_id"], OBJECTIVE: float(top[OBJECTIVE]),
                           "epochs": int(top["epochs"]), "params": params}
    storage.write_text(summary_path, json.dumps(summary, indent=2, default=str))
    progress(f"[tune] {summary['trials']} trials, stops {summary['stops']}, "
             f"{summary['wall_seconds']:.0f} s → {out}")
    if "best" in summary:
        progress(f"[tune] best {summary['best']['trial_id']}: {OBJECTIVE}="
                 f"{summary['best'][OBJECTIVE]:.4f} ({describe(summary['best']['params'])}) → "
                 f"prodcat train --config {storage.join(out, 'best_config.yaml')}")
    return summary


def dump_config_dict(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
