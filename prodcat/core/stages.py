"""The stages of prodcat, in the order a product flows through them: defined here and only here.

The ``prodcat`` command lists its subcommands in this order (:mod:`prodcat.cli`), the main job runs
the stages marked ``main_job`` in this order (:mod:`prodcat.pipeline.job`), each stage package's
docstring starts with ``Stage <number>, `` and ``docs/architecture.md`` and the README list them in
this order; ``tests/unit/core/test_stages.py`` checks that all of them agree.

To add a stage: a :class:`Stage` line below at its place in the flow, its package
``prodcat/<name>/``, its place in the import-linter layers contract (``pyproject.toml``), a
``stage_<name>`` method in ``prodcat/pipeline/job.py`` when the main job runs it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One stage: a package ``prodcat/<name>/`` and the subcommands that run it."""

    name: str                        # the package (prodcat.<name>) and the main job's stage name
    summary: str                     # what goes in → what comes out, a few words
    commands: tuple[str, ...] = ()   # `prodcat <command>` subcommands (prodcat/cli/<command>.py)
    main_job: bool = True            # `prodcat pipeline` runs it (as stage_<name>)

    @property
    def number(self) -> int:
        """1-based position in :data:`STAGES` (the ``Stage <number>`` of its package docstring)."""
        return STAGES.index(self) + 1


STAGES: tuple[Stage, ...] = (
    Stage("catalog", "platform exports → product table", ("catalog",)),
    Stage("embed", "product table → embedding store (Ray Data)", ("embed",)),
    Stage("models", "fusion, per-level heads, dynamic masking, checkpoints (a library)", (),
          main_job=False),
    Stage("train", "product texts → a fine-tuned text encoder; embedding store + labels → "
          "calibrated checkpoint (Ray Train)", ("finetune", "train")),
    Stage("evaluate", "models and baselines on in-platform and leave-one-platform-out folds",
          ("evaluate",)),
    Stage("tune", "sweeps over the training config (Ray Tune)", ("tune",), main_job=False),
    Stage("recategorize", "finer subcategories found in the data, taxonomy extension",
          ("recategorize",)),
    Stage("cascade", "two checkpoints → cascade.json (routing rule, τ fit, stage runner)",
          ("cascade",)),
    Stage("score", "the cascade over a whole catalogue → predictions (Ray Data)", ("score",)),
    Stage("onboard", "a platform met as a new one: suggested category mappings and partial paths, "
          "measured per leave-one-platform-out fold", ("onboard",)),
    Stage("serve", "the cascade as an HTTP service (Ray Serve)", ("serve",)),
)

#: the main job's steps after its stages: ``report.md`` from every stage's outputs
MAIN_JOB_STEPS: tuple[str, ...] = tuple(s.name for s in STAGES if s.main_job) + ("report",)

#: ``prodcat`` subcommands in flow order, then the main job
COMMANDS: tuple[str, ...] = tuple(c for s in STAGES for c in s.commands) + ("pipeline",)

#: every package of ``prodcat`` in the order of ``ls``-as-pipeline: shared code, stages, the job
PACKAGES: tuple[str, ...] = ("core",) + tuple(s.name for s in STAGES) + ("pipeline", "cli")


def stage(name: str) -> Stage:
    """The stage called ``name``.

    Raises:
        KeyError: for an unknown name (the message lists the stages).
    """
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")
