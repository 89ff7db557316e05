"""A Ray Tune sweep over ``TrainConfig`` fields with ASHA, resumable, local or on S3.

Each trial is a Tune *function* that builds the same ``TorchTrainer`` as ``prodcat train``
(:func:`prodcat.build_trainer`: same loop, same data path, same checkpoints) and forwards
its per-epoch reports to Tune with ``TuneReportCallback``. Why this and not the loop itself as the
trainable: a trial is then exactly a ``prodcat train`` run (multi-worker and GPU trials on a
cluster, Ray Train's worker fault tolerance, checkpoints resumable by output + name), and Ray 2.60
refuses ``ray.train.report`` inside a Tune function, so the loop cannot run there unchanged. The
price is a few seconds of actor start-up per trial; :mod:`prodcat.tune.cleanup` frees the placement
groups the sweep's own ASHA-stopped trials leave reserved (and nothing else).

Layout of a sweep at ``<storage>/<name>`` (local folder or ``s3://``):

- Ray Tune's experiment state (``tuner.pkl``, ``experiment_state-*.json``, one folder per trial);
- ``sweep.json``: the space, the resolved base config and the sweep settings, so ``--resume``
  needs only ``--storage`` and ``--name``;
- ``trials/<trial_id>/``: each trial's training output (Ray Train checkpoints under ``ray/``);
- ``report/``: ``trials.csv``, ``trials.md``, ``trials.png``, ``best_config.yaml`` (a file
  ``prodcat train --config`` accepts unchanged), ``evaluate_best.yaml`` and ``summary.json``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Literal, Sequence

from pydantic import Field, model_validator

from prodcat.core import console, storage
from prodcat.core.config import ConfigError, StrictModel, load_config, parse_override
from prodcat.core.console import say
from prodcat.core.runtime import ensure_ray
from prodcat.evaluate.grid import transfer_scores
from prodcat.models.config import DECISION
from prodcat.train.config import TrainConfig, apply_overrides
from prodcat.train.features import load_feature_table
from prodcat.train.trainer import build_trainer
from prodcat.tune.cleanup import PG_LOG, TrialPlacementGroups, release_sweep
from prodcat.tune.progress import SweepProgress
from prodcat.tune.results import asha_rungs, write_report
from prodcat.tune.space import SearchSpace, load_space, validate_space

SPEC_FILE = "sweep.json"


class AshaSettings(StrictModel):
    """Asynchronous successive halving over epochs (``training_iteration``)."""

    grace_period: int = Field(1, ge=1, description="epochs every trial gets before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1, description="keep the top 1/rf at each rung")
    brackets: int = Field(1, ge=1, description="ASHA brackets")


class SweepSettings(StrictModel):
    """How many trials, how many at once, and what each one gets; the same sweep runs on a laptop
    and on a GPU cluster by changing only these."""

    num_samples: int = Field(8, ge=1, description="samples of the space (each grid point this often)")
    max_concurrent_trials: int = Field(2, ge=1, description="trials running at once")
    cpus_per_trial: float = Field(0.5, gt=0, description="CPUs of a trial's training workers, in all")
    gpus_per_trial: int = Field(0, ge=0, description="GPUs per trial: that many workers, one GPU each")
    workers_per_trial: int = Field(1, ge=1, description="training workers per CPU trial")
    driver_cpus: float = Field(0.05, gt=0, description="CPU of the Tune function driving the trainer")
    asha: AshaSettings = Field(default_factory=AshaSettings)
    objective: Literal["val_hF", "nested_lopo"] = Field(
        "val_hF", description="val_hF: validation hF per epoch, with ASHA; nested_lopo: the nested "
        "cross-platform score (each trial trains on every platform and scores every other "
        "platform's validation split: prodcat.evaluate.grid.transfer_scores), no early stopping")
    metric: str = Field("val_hF", description="reported metric ASHA and the ranking maximise "
                        "(nested_hF when objective is nested_lopo)")
    seed: int | None = Field(0, description="seed of the random search (None: unseeded)")
    time_budget_s: float | None = Field(None, gt=0, description="stop the whole sweep after this (s)")
    max_failures: int = Field(0, ge=-1, description="retries of a failed trial (Tune level)")

    @model_validator(mode="after")
    def _nested_metric(self) -> "SweepSettings":
        if self.objective == "nested_lopo" and self.metric == "val_hF":
            self.metric = "nested_hF"
        return self

    def scaling(self) -> dict[str, Any]:
        """The ``scaling.*`` overrides of each trial's TrainConfig."""
        workers = self.gpus_per_trial or self.workers_per_trial
        return {"scaling.num_workers": workers, "scaling.use_gpu": self.gpus_per_trial > 0,
                "scaling.cpus_per_worker": self.cpus_per_trial / workers}


class SweepSpec(StrictModel):
    """Everything that defines a sweep; saved as ``<experiment>/sweep.json``."""

    name: str = Field(description="experiment name (folder under storage)")
    storage: str = Field(description="parent folder of the experiment, local or s3://")
    space: SearchSpace
    base: dict[str, Any] = Field(description="the resolved base TrainConfig (JSON)")
    settings: SweepSettings = Field(default_factory=SweepSettings)

    @property
    def max_epochs(self) -> int:
        """The most epochs any trial can run (ASHA's ``max_t``)."""
        param = self.space.params.get("optim.epochs")
        if param is None:
            return int(self.base["optim"]["epochs"])
        return int(max(param.samples()))

    @property
    def uri(self) -> str:
        """``<storage>/<name>``."""
        return storage.join(self.storage, self.name)


def build_spec(space_path: str, name: str, storage_uri: str, base_config: str | None = None,
               base_overrides: Sequence[str] = (), settings: dict[str, Any] | None = None) -> SweepSpec:
    """Read the space, resolve the base config (file → space ``base`` → ``base_overrides``) and the
    settings (space ``sweep`` → ``settings``), and validate the space against the config.

    Raises:
        prodcat.core.config.ConfigError: on any invalid field, value or combination.
    """
    space = load_space(space_path)
    base = load_config(TrainConfig, base_config or space.base_config,
                       {**space.base, **dict(_parse(o) for o in base_overrides)})
    validate_space(space, base, apply_overrides)
    merged = {**space.sweep, **{k: v for k, v in (settings or {}).items() if v is not None}}
    try:
        sweep_settings = SweepSettings.model_validate(merged)
    except Exception as err:
        raise ConfigError(f"invalid sweep settings: {err}") from None
    if not storage.is_remote(storage_uri):
        import os

        storage_uri = os.path.abspath(storage_uri)
    return SweepSpec(name=name, storage=storage_uri, space=space,
                     base=base.model_dump(mode="json"), settings=sweep_settings)


def _parse(text: str) -> tuple[str, Any]:

    return parse_override(text)


def trial_config(spec_base: dict, params: dict, settings: SweepSettings, output: str):
    """The TrainConfig of one trial: base + sampled params + resources + its own output."""
    base = TrainConfig.model_validate(spec_base)
    return apply_overrides(base, {**params, **settings.scaling(), "output": output,
                                           "name": "train"})


def run_trial(params: dict, *, base: dict, settings: dict, trials_uri: str, table=None) -> None:
    """The Tune function: build the trial's ``TorchTrainer`` and fit it; reports reach Tune
    through ``TuneReportCallback`` (one ``training_iteration`` per epoch).

    A restored trial (``--resume``) uses the same output + name, so Ray Train resumes it from its
    last epoch checkpoint; one whose training had already ended when the sweep was interrupted
    reports its last epoch again instead of training. Each start is logged in
    ``<trial output>/attempts.json`` (time, epoch of the newest checkpoint found)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    config = trial_config(base, params, SweepSettings.model_validate(settings),
                          storage.join(trials_uri, trial_id))
    if config.model.fusion == DECISION:
        tune.report(_decision_trial(config, table))
        return
    state = latest_train_state(config.output)
    _log_attempt(config.output, state)
    if state and state.get("history") and (state["stopped"] or state["epoch"] + 1 >= config.optim.epochs):
        tune.report(state["history"][-1])
        return
    build_trainer(config, table, callbacks=[TuneReportCallback()],
                  placement_group_log=storage.join(config.output, PG_LOG)).fit()


def run_nested_trial(params: dict, *, base: dict, settings: dict, trials_uri: str, table=None) -> None:
    """The Tune function of ``objective: nested_lopo``: the trial's config trained on each
    platform in turn (Ray Train's local mode, in this trial's CPUs) and scored on every other
    platform's validation split; one report with ``nested_hF`` and each pair's hF.

    The training runs go to a Ray task started from the trial (0 CPUs of its own: it works in the
    trial's reservation): Ray 2.60 refuses Ray Train's API inside a Tune function's process, and
    local mode runs the training loop in the calling process."""
    import ray
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    config = trial_config(base, params, SweepSettings.model_validate(settings),
                          storage.join(trials_uri, trial_id))
    config = apply_overrides(config, {"scaling.num_workers": 0})
    nested = ray.remote(num_cpus=0, max_retries=0)(transfer_scores)
    tune.report(ray.get(nested.remote(config, table, config.output)))


def _decision_trial(config: TrainConfig, table) -> dict:
    """A decision-level fusion trial (no epochs, no Ray Train): fitted in a Ray task in the
    trial's reservation (0 CPUs of its own); reports its held-out hF as ``val_hF`` (the products
    its choices were made on: the training platforms' validation split and each training platform
    predicted by components fitted on the others)."""
    import ray

    def fit(config: TrainConfig, table) -> dict:
        from prodcat.train.trainer import train

        result = train(config, table=table, progress=None)
        return {**result.metrics, "best_val_hF": result.metrics["val_hF"], "epoch": 0}

    return ray.get(ray.remote(num_cpus=0, max_retries=0)(fit).remote(config, table))


def latest_train_state(output: str) -> dict | None:
    """``train_state.json`` of the newest epoch checkpoint of the training run in ``output``
    (``<output>/ray/train/checkpoint_*``), or None."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(storage.join(output, "ray", "train"))
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    folders = sorted(i.path for i in infos
                     if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))
    for folder in reversed(folders):  # names end in a timestamp: newest last
        uri = f"s3://{folder}" if storage.is_remote(output) else folder
        try:
            return json.loads(storage.read_text(storage.join(uri, "train_state.json")))
        except FileNotFoundError:  # a checkpoint still being written when the trial stopped
            continue
    return None


def _log_attempt(output: str, state: dict | None) -> None:
    path = storage.join(output, "attempts.json")
    attempts = json.loads(storage.read_text(path)) if storage.exists(path) else []
    attempts.append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "resume_from_epoch": None if state is None else state.get("epoch")})
    storage.write_text(path, json.dumps(attempts, indent=1))


def trial_dirname(trial) -> str:
    """Short trial folder names (the default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


def _tune_storage(uri: str):
    """``(path, filesystem)`` for Ray Tune (an explicit S3 filesystem honours AWS_ENDPOINT_URL)."""
    if storage.is_remote(uri):
        return uri[len("s3://"):].rstrip("/"), storage.s3_filesystem()
    return uri, None


def preload_table(spec: SweepSpec):
    """The feature table with every modality the space can ask for, read once on the driver and
    shared with the trials through the object store."""

    base = TrainConfig.model_validate(spec.base)
    features = list(base.model.modalities)
    param = spec.space.params.get("model.modalities")
    for value in (param.args if param is not None and param.kind in ("choice", "grid") else []):
        features += [f for f in value if f not in features]
    data = base.data
    return load_feature_table(data.products, data.embeddings, features, data.taxonomy)


def _trainable(spec: SweepSpec, table):
    from ray import tune

    nested = spec.settings.objective == "nested_lopo"
    trainable = tune.with_parameters(run_nested_trial if nested else run_trial, base=spec.base,
                                     settings=spec.settings.model_dump(mode="json"),
                                     trials_uri=storage.join(spec.uri, "trials"), table=table)
    cpus = spec.settings.cpus_per_trial if nested else spec.settings.driver_cpus
    return tune.with_resources(trainable, {"cpu": cpus})


def progress_callback(spec: SweepSpec) -> SweepProgress:
    """The callback that prints a line per ended trial, the progress and the best so far."""
    nested = spec.settings.objective == "nested_lopo"
    return SweepProgress(total=spec.settings.num_samples * spec.space.num_grid_points(),
                         keys=list(spec.space.params), base_epochs=int(spec.base["optim"]["epochs"]),
                         base_patience=int(spec.base["optim"]["patience"]),
                         rungs=set() if nested else asha_rungs(spec), metric=spec.settings.metric)


def log_folder(spec: SweepSpec) -> str:
    """Where the sweep's own logs go (Ray Tune's status tables ``tune.log``, Ray's ``ray.log``):
    ``<experiment>/logs`` for local storage; for ``s3://`` storage the command's log folder, else
    ``$TMPDIR/prodcat-tune/<name>``."""
    import os
    import tempfile

    if not storage.is_remote(spec.uri):
        return os.path.join(spec.uri, "logs")
    return str(console.log_dir() or os.path.join(tempfile.gettempdir(), "prodcat-tune", spec.name))


def _new_tuner(spec: SweepSpec, trainable, callbacks: list, verbose: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    s = spec.settings
    path, filesystem = _tune_storage(spec.storage)
    scheduler = FIFOScheduler() if s.objective == "nested_lopo" else ASHAScheduler(
        time_attr="training_iteration", max_t=spec.max_epochs, grace_period=s.asha.grace_period,
        reduction_factor=s.asha.reduction_factor, brackets=s.asha.brackets)
    return tune.Tuner(
        trainable, param_space=spec.space.param_space(),
        tune_config=tune.TuneConfig(
            metric=s.metric, mode="max", scheduler=scheduler, num_samples=s.num_samples,
            time_budget_s=s.time_budget_s,  # the generator limits concurrency (a seeded one
            search_alg=BasicVariantGenerator(  # cannot be combined with max_concurrent_trials)
                random_state=s.seed, max_concurrent=s.max_concurrent_trials),
            trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=path, storage_filesystem=filesystem, verbose=verbose,
            callbacks=callbacks, failure_config=tune.FailureConfig(max_failures=s.max_failures)))


class SweepExists(ConfigError):
    """A sweep of this name is already in storage and ``resume`` was not asked for."""


def load_spec(uri: str) -> SweepSpec | None:
    """The ``sweep.json`` of the experiment at ``uri``, or None."""
    path = storage.join(uri, SPEC_FILE)
    return SweepSpec.model_validate_json(storage.read_text(path)) if storage.exists(path) else None


def run_sweep(spec: SweepSpec, resume: bool = False, callbacks: Sequence = (), verbose: int = 1,
              progress: Callable[[str], None] = say) -> dict:
    """Run the sweep, or resume it (``Tuner.restore``) when ``resume`` and it can be restored;
    then write the report. Returns the summary (as in ``report/summary.json``).

    Raises:
        SweepExists: when ``<storage>/<name>`` holds a sweep and ``resume`` is False.
        prodcat.core.config.ConfigError: when resuming with a different space or base config.
    """
    from ray import tune

    logs = log_folder(spec)
    ensure_ray(log_dir=logs)
    saved = load_spec(spec.uri)
    path, filesystem = _tune_storage(spec.uri)
    restorable = tune.Tuner.can_restore(path, storage_filesystem=filesystem)
    if saved is not None and not resume:
        raise SweepExists(f"a sweep named {spec.name!r} exists at {spec.uri}; pass --resume to "
                          "continue it or choose another --name")
    if saved is not None and (saved.space != spec.space or saved.base != spec.base):
        raise ConfigError(f"{spec.uri} was started with another space or base config; resume it "
                          "with the same ones (or without --space) or use another --name")
    if saved is not None:
        spec = spec.model_copy(update={"settings": saved.settings})  # Tune keeps the old settings
    storage.write_text(storage.join(spec.uri, SPEC_FILE), spec.model_dump_json(indent=2))
    start = time.perf_counter()
    s = spec.settings
    tables = (f"Ray Tune's status tables: {os.path.join(logs, 'tune.log')} (--verbose shows them here)"
              if verbose and not console.verbose() else "")
    progress(f"[tune] sweep {spec.name}: {s.num_samples * spec.space.num_grid_points()} trials, "
             f"{s.max_concurrent_trials} at once, {s.cpus_per_trial:g} CPU + {s.gpus_per_trial} GPU "
             f"each, ranked by {s.metric} → {spec.uri}" + (f"; {tables}" if tables else ""))
    table = preload_table(spec)
    progress(f"[tune] data: {len(table):,} products, features {table.features}")
    trials_uri = storage.join(spec.uri, "trials")
    trainable = _trainable(spec, table)
    if resume and restorable:
        progress(f"[tune] resuming {spec.uri}")
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=filesystem)
    else:
        tuner = _new_tuner(spec, trainable, [TrialPlacementGroups(trials_uri),
                                             progress_callback(spec), *callbacks], verbose)
    with console.prints_to(os.path.join(logs, "tune.log") if verbose else None):
        grid = tuner.fit()
    fit_seconds = time.perf_counter() - start
    time.sleep(2.0)  # the trials' actors are ending; then free what their controllers left
    release_sweep(trials_uri)
    return write_report(spec, grid, fit_seconds, resumed=bool(resume and restorable),
                        statuses=saved_statuses(spec), progress=progress)


def report_sweep(spec: SweepSpec, progress: Callable[[str], None] = say) -> dict:
    """Rewrite the report of the sweep in storage from its saved results, running nothing (also
    while it runs elsewhere). Raises FileNotFoundError when there is no saved sweep state."""
    from ray import tune

    path, filesystem = _tune_storage(spec.uri)
    if not tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        raise FileNotFoundError(f"no Ray Tune experiment state at {spec.uri}")
    analysis = tune.ExperimentAnalysis(path, storage_filesystem=filesystem,
                                       default_metric=spec.settings.metric, default_mode="max")
    return write_report(spec, tune.ResultGrid(analysis), None,  # keeps the record of fits
                        statuses={t.trial_id: t.status for t in analysis.trials}, progress=progress)


def saved_statuses(spec: SweepSpec) -> dict[str, str]:
    """Each trial's status in the saved experiment state (``RUNNING`` / ``PENDING`` after an
    interruption: Tune saves the state before it stops the trials)."""
    from ray import tune

    path, filesystem = _tune_storage(spec.uri)
    try:
        analysis = tune.ExperimentAnalysis(path, storage_filesystem=filesystem)
    except Exception:  # no state saved (nothing ran): every trial counts as unknown
        return {}
    return {t.trial_id: t.status for t in analysis.trials}
