"""Search spaces: YAML over ``TrainConfig`` fields by dotted name, checked before a sweep starts.

A space file (``tune/spaces/*.yaml``)::

    base_config: configs/train.default.yaml   # the TrainConfig the space overrides (optional)
    base: {optim.epochs: 6}                   # fixed overrides applied to it first (optional)
    params:                                   # one distribution per field, by dotted name
      model.fusion: {choice: [early, late, attention, average]}
      model.masking: {grid: [none, hard, soft]}     # every value, times sweep.num_samples
      model.dropout: {uniform: [0.0, 0.4]}
      optim.lr: {loguniform: [3.0e-4, 3.0e-3]}
      model.hidden_dim: {choice: [128, 256]}
    sweep: {num_samples: 24, max_concurrent_trials: 2}   # prodcat.tune.sweep.SweepSettings fields

Distributions (Ray Tune's): ``choice`` (values), ``grid`` (values, each one trial per sample),
``uniform`` / ``loguniform`` ([low, high]), ``quniform`` ([low, high, q]), ``randint`` /
``lograndint`` ([low, high), integers). :func:`validate_space` rejects an unknown field (naming the
valid ones and the closest match), a value the field does not accept, and a combination of the
discrete values that breaks a cross-field rule (e.g. attention heads that do not divide
``hidden_dim``), so a typo fails in a second, not an hour into the sweep.
"""

from __future__ import annotations

import difflib
import itertools
import typing
from typing import Any

from pydantic import BaseModel, Field, field_serializer, field_validator

from prodcat.core.config import ConfigError, StrictModel, read_mapping

DISCRETE = ("choice", "grid")
RANGES = {"uniform": 2, "loguniform": 2, "quniform": 3, "randint": 2, "lograndint": 2}
KINDS = DISCRETE + tuple(RANGES)
# set by the sweep itself (trial folders, resources per trial): not searchable
RESERVED = ("output", "name", "scaling.num_workers", "scaling.use_gpu", "scaling.cpus_per_worker")
MAX_COMBINATIONS = 5_000


class Param(StrictModel):
    """One searched field: exactly one distribution."""

    kind: str = Field(description="choice | grid | uniform | loguniform | quniform | randint | lograndint")
    args: list[Any] = Field(description="the values (choice, grid) or [low, high(, q)]")

    @classmethod
    def parse(cls, key: str, spec: Any) -> "Param":
        """``{"choice": [...]}`` → Param; raises ConfigError naming ``key`` otherwise."""
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise ConfigError(f"params.{key}: expected one of {{{' | '.join(KINDS)}: [...]}}, got "
                              f"{spec!r} (fixed values go under 'base:')")
        kind, args = next(iter(spec.items()))
        if not isinstance(args, list) or not args:
            raise ConfigError(f"params.{key}.{kind}: expected a non-empty list, got {args!r}")
        if kind in RANGES:
            if len(args) != RANGES[kind] or not all(isinstance(a, (int, float)) for a in args):
                raise ConfigError(f"params.{key}.{kind}: expected {RANGES[kind]} numbers "
                                  f"[low, high{', q' if RANGES[kind] == 3 else ''}], got {args!r}")
            if not args[0] < args[1] or (kind.startswith("log") and args[0] <= 0):
                raise ConfigError(f"params.{key}.{kind}: need 0 < low < high for log scales and "
                                  f"low < high otherwise, got {args!r}")
        return cls(kind=kind, args=args)

    def samples(self) -> list[Any]:
        """Values that stand for this parameter when checking configs: every discrete value, or
        the two ends of a range."""
        if self.kind in DISCRETE:
            return list(self.args)
        low, high = self.args[0], self.args[1]
        if self.kind in ("randint", "lograndint"):
            return [low, high - 1]
        return [low, high]

    def to_tune(self):
        """The Ray Tune domain (``tune.choice(...)``, ``tune.grid_search(...)``, ...)."""
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        return getattr(tune, self.kind)(*([self.args] if self.kind == "choice" else self.args))


class SearchSpace(StrictModel):
    """A parsed space file (see the module docstring)."""

    base_config: str | None = Field(None, description="TrainConfig YAML the params override")
    base: dict[str, Any] = Field(default_factory=dict, description="fixed dotted overrides")
    params: dict[str, Param] = Field(default_factory=dict, description="searched fields")
    sweep: dict[str, Any] = Field(default_factory=dict, description="prodcat.tune.sweep.SweepSettings fields")
    description: str = Field("", description="free text shown in the report")

    @field_validator("params", mode="before")
    @classmethod
    def _parse_params(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"params must map dotted field names to distributions, got {value!r}")
        return {k: v if isinstance(v, Param) else Param.parse(k, v) for k, v in value.items()}

    @field_serializer("params")
    def _dump_params(self, params: dict[str, Param]) -> dict[str, dict]:
        return {k: {p.kind: p.args} for k, p in params.items()}  # the file's own format

    def param_space(self) -> dict[str, Any]:
        """Ray Tune's ``param_space``: ``{"model.fusion": tune.choice([...]), ...}``."""
        return {key: param.to_tune() for key, param in self.params.items()}

    def num_grid_points(self) -> int:
        """Trials per sample: the product of the grid sizes (1 without grids)."""
        sizes = [len(p.args) for p in self.params.values() if p.kind == "grid"]
        return int(_product(sizes))


def _product(sizes: list[int]) -> int:
    out = 1
    for s in sizes:
        out *= s
    return out


def load_space(path: str) -> SearchSpace:
    """Read and parse a space file (local or ``s3://``)."""

    data = read_mapping(path)
    try:
        return SearchSpace.model_validate(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except Exception as err:  # pydantic's ValidationError: keep its field paths
        raise ConfigError(f"{path}: {err}") from None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``M``, ``M | None``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def check_field(model: type[BaseModel], key: str) -> None:
    """Raise ConfigError unless ``key`` (``"model.fusion"``) names a field of ``model``; the message
    lists the valid names at the level that failed and the closest match."""
    current: type[BaseModel] | None = model
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if current is None:
            raise ConfigError(f"{'.'.join(parts[:depth])} is a value, not a section: {key!r} "
                              "cannot be searched")
        fields = current.model_fields
        if part not in fields:
            prefix = ".".join(parts[:depth])
            names = [f"{prefix}.{n}" if prefix else n for n in fields]
            close = difflib.get_close_matches(".".join(parts[:depth + 1]), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown field {key!r} in {model.__name__}.{hint} "
                              f"Valid names here: {', '.join(names)}")
        current = _model_of(fields[part].annotation)


def validate_space(space: SearchSpace, base: BaseModel, apply) -> None:
    """Check every searched field and value against the config model before anything runs.

    Args:
        base: the resolved base config (a ``TrainConfig``).
        apply: ``apply(config, {dotted: value}) -> config`` that validates (raises ConfigError);
            ``prodcat.train.config.apply_overrides``.

    Raises:
        ConfigError: naming the field, the value or the combination, and why.
    """
    model = type(base)
    for key in space.params:
        if key in RESERVED:
            raise ConfigError(f"params.{key} is set by the sweep (trial folders and resources per "
                              "trial come from sweep settings: cpus_per_trial, gpus_per_trial, "
                              "workers_per_trial); remove it from params")
        check_field(model, key)
    for key, param in space.params.items():
        for value in param.samples():
            try:
                apply(base, {key: value})
            except ConfigError as err:
                raise ConfigError(f"params.{key}: value {value!r} is not accepted: {err}") from None
    keys = list(space.params)  # combinations of the discrete values; ranges at their low end
    pools = [p.samples() if p.kind in DISCRETE else p.samples()[:1] for p in space.params.values()]
    if _product([len(p) for p in pools]) > MAX_COMBINATIONS:  # too many: the values alone were checked
        return
    for combo in itertools.product(*pools):
        try:
            apply(base, dict(zip(keys, combo)))
        except ConfigError as err:
            raise ConfigError(f"the combination {dict(zip(keys, combo))} is not a valid config: "
                              f"{err}. Narrow the space so every combination is valid.") from None
