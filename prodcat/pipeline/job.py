"""The main job: every stage, in order, into one run folder, with a report a person can read.

The steps are :data:`prodcat.core.stages.MAIN_JOB_STEPS` (the stages the main job runs, in the one
stage order, then the report): catalog build → embed → train (text-only stage-1 model and
multimodal stage-2 model) → evaluate (in-platform and leave-one-platform-out) → recategorize
(finer subcategories of one category: SimCLR, UMAP, cascade clustering) → cascade fit → bulk
scoring → onboarding (each platform met as a new one: suggested mappings against the hand-made
ones, partial paths per fold) → the cascade service started, a handful of real products
categorized over HTTP, the service stopped → ``report.md``.

Each stage runs the same entry point as its ``prodcat`` subcommand (the ``command`` callable,
``prodcat.cli.main(argv)`` when started by ``prodcat pipeline``) on one local Ray instance, so the
pipeline is exactly what a user would type, in order, and prints each command line. Figures
in the report are read back from the files the stages write; nothing is computed twice.

Run folder (``--output``, default ``runs/sample``; ``--full`` defaults to ``runs/full``):
``catalog/``, ``embeddings/``, ``train/text``, ``train/multimodal``, ``eval/``, ``recategorize/``,
``cascade/``, ``predictions/``, ``onboard/``, ``serve_demo.json``, ``pipeline.json`` (stage timings),
``report.md``.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Callable

from pydantic import Field

from prodcat.core import storage
from prodcat.core.config import StrictModel
from prodcat.core.console import say
from prodcat.core.errors import DataError
from prodcat.core.paths import REPO_ROOT
from prodcat.core.runtime import ensure_ray
from prodcat.core.stages import MAIN_JOB_STEPS
from prodcat.pipeline.demo import serve_demo
from prodcat.pipeline.report import write_report

#: the steps of the main job, in order (defined in prodcat.core.stages)
STAGES = MAIN_JOB_STEPS


class StageFailed(DataError, RuntimeError):
    """A stage's command exited with an error it printed itself (a file it cannot read, a
    checkpoint of other settings in the run folder); the pipeline's CLI adds this line without a
    traceback."""


class PipelineConfig(StrictModel):
    """Settings of the main job."""

    output: str = Field("runs/sample", description="run folder (local path); --full uses runs/full")
    full: bool = Field(False, description="all products instead of the stratified sample")
    sample_per_category: int = Field(
        25, ge=1, description="default size: at most this many products per (platform, Google "
        "category), chosen by a hash of product_id, so every category stays represented")
    encoders: str = Field("configs/encoders.offline.yaml", description="EmbedConfig YAML")
    train: str = Field("configs/train.default.yaml", description="TrainConfig YAML (best known)")
    evaluate: str = Field("configs/evaluate.default.yaml", description="EvaluateConfig YAML")
    text_modalities: list[str] = Field(["text", "lexical"], description="the cascade's text stage: "
                                       "features read from the text alone")
    multimodal_modalities: list[str] | None = Field(
        None, description="the cascade's multimodal stage; None: the default model's own "
        "(prodcat/models/presets/default.yaml, as the train config names it)")
    finetune: str | None = Field(
        "configs/finetune.default.yaml", description="FinetuneConfig YAML: the text encoder is "
        "fine-tuned on the training split (prodcat finetune, Ray Train), its vectors added to the "
        "store (ft_text) and read by both cascade stages; null: no fine-tuning. --full fine-tunes "
        "on 6,000 products for 2 epochs; the full-size evaluation fine-tunes one encoder per fold")
    nested_finetune: bool = Field(
        True, description="also fine-tune one text encoder per platform Q on the other platforms "
        "(prodcat finetune + embed the training split into finetune-without-<Q>/), read by Q's "
        "cross-platform held-out set when the cascade stages choose their weights (train "
        "data.variants), so the fine-tuned component is chosen on platforms its encoder never saw; "
        "each on the deployed encoder's training products less Q's (the sample: 610-954 products, "
        "with the three embeddings about 250 s of the train stage, stop 54); false: those sets read the deployed "
        "encoder, which learnt other products of their platform (the choice then favours it)")
    max_epochs: int | None = Field(None, ge=1, description="cap epochs of every training run")
    recategorize: str = Field("configs/recategorize.default.yaml",
                              description="RecategorizeConfig YAML (prodcat recategorize propose)")
    recategorize_category: str = Field(
        "187", description="the category the main job recategorizes (id or path; 187: Shoes)")
    cascade_goal: str = Field(
        "max_escalation=1.0", description="how tau is chosen (prodcat cascade fit): best validation "
        "hF at any escalation rate; hf_within=0.5 picks the cheapest within 0.5 hF points of multimodal")
    demo_products: int = Field(6, ge=1, description="real test products sent to the service")
    onboard_per_category: int = Field(
        10, ge=1, description="onboard stage: products scored per source category of each held-out "
        "platform (its rows of the product table, stored vectors)")
    stages: list[str] = Field(default_factory=lambda: list(STAGES), description="stages to run")


def _repo_path(path: str) -> str:
    """Config files named relative to the repository work from any working directory."""
    return path if Path(path).exists() else str(REPO_ROOT / path)


class Pipeline:
    """Runs the stages of :class:`PipelineConfig` and records each one's wall time.

    Args:
        command: runs one ``prodcat`` command line (``argv`` without ``prodcat``) and returns its
            exit code: ``prodcat.cli.main``.
        log: where the job's own lines go.
    """

    def __init__(self, config: PipelineConfig, command: Callable[[list[str]], int],
                 log: Callable[[str], None] = say) -> None:
        self.config = config
        self.command = command
        self.out = Path(config.output)
        self.log = log
        previous = self.out / "pipeline.json"  # a partial rerun keeps the other stages' timings
        self.timings: dict[str, float] = (json.loads(previous.read_text()).get("stage_seconds", {})
                                          if previous.exists() else {})

    def path(self, *parts: str) -> str:
        return str(self.out.joinpath(*parts))

    def _cli(self, argv: list[str]) -> None:
        """Run one ``prodcat`` command line, printed first.

        Raises:
            StageFailed: (a ``RuntimeError``) when it exits with a non-zero code, having printed
                its own error.
        """
        self.log("$ prodcat " + " ".join(argv))
        code = self.command(argv)
        if code:
            raise StageFailed(f"prodcat {argv[0]} exited with {code} (its error is above); the run "
                              f"folder's earlier stages are kept in {self.out}: mend what the error "
                              "names and rerun, or give a new --output")

    def run(self) -> dict:
        """Run every configured stage; returns ``pipeline.json``'s content.

        Raises:
            ValueError: for an unknown stage name.
        """
        unknown = set(self.config.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")

        self.out.mkdir(parents=True, exist_ok=True)
        ensure_ray()
        start = time.perf_counter()
        for stage in STAGES:
            if stage not in self.config.stages:
                continue
            self.log(f"\n=== [{stage}] ===")
            t0 = time.perf_counter()
            getattr(self, f"stage_{stage}")()
            self.timings[stage] = round(time.perf_counter() - t0, 1)
            self._write_state(time.perf_counter() - start)
        self.log(f"\nmain job done in {time.perf_counter() - start:.0f} s → {self.path('report.md')}")
        return json.loads(Path(self.path("pipeline.json")).read_text())

    def _write_state(self, wall: float) -> None:
        state = {"config": self.config.model_dump(), "stage_seconds": self.timings,
                 "last_invocation_seconds": round(wall, 1),
                 "total_stage_seconds": round(sum(self.timings.values()), 1)}
        Path(self.path("pipeline.json")).write_text(json.dumps(state, indent=2))

    # ------------------------------------------------------------------ stages
    def stage_catalog(self) -> None:
        argv = ["catalog", "build", "--output", self.path("catalog")]
        if not self.config.full:
            argv += ["--sample-per-category", str(self.config.sample_per_category)]
        self._cli(argv)

    def stage_embed(self) -> None:
        self._cli(["embed", "--config", _repo_path(self.config.encoders),
              "--products", self.path("catalog", "products.parquet"),
              "--output", self.path("embeddings")])

    def _train_argv(self, name: str, modalities: list[str] | None) -> list[str]:
        argv = ["train", "--config", _repo_path(self.config.train),
                "--products", self.path("catalog", "products.parquet"),
                "--embeddings", self.path("embeddings"), "--output", self.path("train", name),
                "--set", f"name={name}"]
        if modalities:
            argv += ["--set", f"model.modalities={json.dumps(modalities)}"]
        if self.config.max_epochs:
            argv += ["--set", f"optim.epochs={self.config.max_epochs}"]
        return argv

    def stage_train(self) -> None:
        tuned = self._finetune()
        variants = self._nested_finetune(tuned)
        extra = ["--set", f"data.variants={json.dumps(variants)}"] if variants else []
        multimodal = self.config.multimodal_modalities or self._preset_modalities()
        self._cli(self._train_argv("text", self.config.text_modalities + tuned) + extra)
        self._cli(self._train_argv("multimodal", multimodal + tuned) + extra)

    def _nested_finetune(self, tuned: list[str]) -> dict[str, dict[str, str]]:
        """With ``nested_finetune`` (the default): one more fine-tuning per platform Q, on the
        deployed encoder's own training products less Q's (``data.only_products``: the same
        fine-tuning as if Q had not been there; until stop 54 a new subsample of the other
        platforms as large as the deployed one's, about 11 s more each on the sample), embedded
        into its own store: the training split of every platform, what Q's cross-platform
        held-out set reads (its components fit on the other platforms' training rows and predict
        Q's; stop 33 embedded Q's products only, and the fit found no rows); ``{feature: {Q:
        store}}`` for train's ``data.variants`` (``{}`` when off or nothing was fine-tuned)."""
        from prodcat.embed.store import ENCODER_TRAINED_ON, encoder_trained_on
        from prodcat.train.finetune_loop import ENCODER_DIR

        if not tuned or not self.config.nested_finetune:
            return {}
        products = self.path("catalog", "products.parquet")
        platforms = sorted(set(storage.read_table(products, columns=["platform"])["platform"].to_pylist()))
        if len(platforms) < 2:
            return {}
        variants: dict[str, str] = {}
        split = self._train_split()
        deployed_rows = encoder_trained_on(self.path("finetune", ENCODER_DIR))
        if deployed_rows is None:
            raise RuntimeError(f"the deployed encoder {self.path('finetune', ENCODER_DIR)} lists no "
                               f"training products ({ENCODER_TRAINED_ON}), which its nested "
                               "fine-tunings start from: fine-tune it again (a new --output)")
        for q in platforms:
            folder = self.path(f"finetune-without-{q}")
            argv = ["finetune", "--config", _repo_path(self.config.finetune), "--products", products,
                    "--output", folder, "--set", f"name=without-{q}",
                    "--set", f"data.platforms={json.dumps([p for p in platforms if p != q])}",
                    "--set", f"data.only_products={deployed_rows}"]
            if self.config.full:
                argv += ["--set", "data.max_train_products=6000", "--set", "optim.epochs=2"]
            self._cli(argv)
            self._cli(["embed", "--config", str(Path(folder) / "encoder.yaml"), "--products", products,
                       "--output", str(Path(folder) / "embeddings"), "--splits", split])
            variants[q] = str(Path(folder) / "embeddings")
        return {tuned[0]: variants}

    def _finetune(self) -> list[str]:
        """Fine-tune the text encoder and add its feature to the store; ``[feature]`` (or ``[]``
        without ``finetune``)."""
        if not self.config.finetune:
            return []
        argv = ["finetune", "--config", _repo_path(self.config.finetune),
                "--products", self.path("catalog", "products.parquet"), "--output", self.path("finetune")]
        if self.config.full:
            argv += ["--set", "data.max_train_products=6000", "--set", "optim.epochs=2"]
        self._cli(argv)
        self._cli(["embed", "--config", self.path("finetune", "encoder.yaml"),
                   "--products", self.path("catalog", "products.parquet"),
                   "--output", self.path("embeddings")])
        return [json.loads(Path(self.path("finetune", "finetune_result.json")).read_text())["feature"]]

    def _train_split(self) -> str:
        """The split ``prodcat train`` trains on (``data.train_split`` of the train config)."""
        from prodcat.core.config import load_config
        from prodcat.train.config import TrainConfig

        return load_config(TrainConfig, _repo_path(self.config.train)).data.train_split

    def _preset_modalities(self) -> list[str]:
        from prodcat.core.config import load_config
        from prodcat.train.config import TrainConfig

        return list(load_config(TrainConfig, _repo_path(self.config.train)).model.modalities)

    def stage_evaluate(self) -> None:
        argv = ["evaluate", "--config", _repo_path(self.config.evaluate),
                "--products", self.path("catalog", "products.parquet"),
                "--embeddings", self.path("embeddings"), "--output", self.path("eval")]
        if self.config.max_epochs:
            argv += ["--set", f"train.optim.epochs={self.config.max_epochs}"]
        self._cli(argv)

    def stage_recategorize(self) -> None:
        self._cli(["recategorize", "propose", "--config", _repo_path(self.config.recategorize),
                   "--products", self.path("catalog", "products.parquet"),
                   "--embeddings", self.path("embeddings"),
                   "--category", self.config.recategorize_category,
                   "--output", self.path("recategorize")])

    def stage_cascade(self) -> None:
        self._cli(["cascade", "fit", "--text-model", self.path("train", "text", "model"),
              "--multimodal-model", self.path("train", "multimodal", "model"),
              "--products", self.path("catalog", "products.parquet"),
              "--embeddings", self.path("embeddings"), "--goal", self.config.cascade_goal,
              "--output", self.path("cascade")])

    def stage_score(self) -> None:
        self._cli(["score", "--model", self.path("cascade"),
              "--input", self.path("catalog", "products.parquet"),
              "--features-from", self.path("embeddings"), "--output", self.path("predictions"),
              "--evaluate", self.path("catalog", "products.parquet")])

    def stage_onboard(self) -> None:
        """Each platform met as a new one: mapping suggestions from the fold's model trained
        without it (the evaluation's checkpoint when kept, else trained here), against its hand
        mapping; partial paths per fold (``prodcat onboard measure``)."""
        self._cli(["onboard", "measure", "--products", self.path("catalog", "products.parquet"),
                   "--embeddings", self.path("embeddings"), "--evaluation", self.path("eval"),
                   "--train", _repo_path(self.config.train),
                   "--max-per-category", str(self.config.onboard_per_category),
                   "--output", self.path("onboard")]
                  + (["--set", f"train_overrides={json.dumps([f'optim.epochs={self.config.max_epochs}'])}"]
                     if self.config.max_epochs else []))

    def stage_serve(self) -> None:

        products = demo_products(self.path("catalog", "products.parquet"), self.config.demo_products)
        result = serve_demo(self.path("cascade"), products, log=self.log)
        Path(self.path("serve_demo.json")).write_text(json.dumps(result, indent=2))

    def stage_report(self) -> None:

        write_report(self.out, self.timings, self.config.model_dump())


def demo_products(products_uri: str, n: int) -> list[dict]:
    """``n`` real test-split products, one per platform in turn, as API requests (image inline
    as base64 when the product has one) plus their true category for the report."""
    table = storage.read_table(products_uri)
    rows = [r for r in table.to_pylist() if r["split"] == "test"]
    by_platform: dict[str, list[dict]] = {}
    for row in rows:
        by_platform.setdefault(row["platform"], []).append(row)
    picked: list[dict] = []
    while len(picked) < n and any(by_platform.values()):
        for platform in sorted(by_platform):
            if by_platform[platform] and len(picked) < n:
                picked.append(by_platform[platform].pop(0))
    out = []
    for row in picked:
        request = {"id": row["product_id"], "title": row["title"]}
        if row["description"]:
            request["description"] = row["description"]
        if row["image_uri"]:
            request["image_base64"] = base64.b64encode(storage.read_bytes(row["image_uri"])).decode()
        out.append({"request": request, "true_path": row["category_path"]})
    return out
