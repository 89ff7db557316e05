"""Typed configuration: pydantic models loaded from YAML/JSON plus ``field.sub=value`` overrides.

One source of truth per component: each config is a pydantic model whose fields carry a one-line
description. A Tune search space or a CLI override names fields by their dotted path; an unknown
field is an error that lists the valid ones (``extra="forbid"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from prodcat.core.storage import read_text

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for prodcat configs: unknown fields are rejected, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ConfigError(ValueError):
    """A config file or override that does not fit its model; the message says how to fix it."""


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"a.b=value"``; the value is parsed as YAML (``1e-3`` → float, ``[a, b]`` → list).

    Raises:
        ConfigError: when there is no ``=`` or the key is empty.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like field.subfield=value")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip(), value


def flag_overrides(flags: dict[str, Any]) -> list[str]:
    """``["field=<JSON value>", ...]`` for :func:`load_config` from a command's flags (``{field:
    value}``); flags left at None (not given) are left out, so the config file's value stands."""
    return [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``data[a][b] = value`` for ``key="a.b"``, creating nested dicts as needed."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
    node[last] = value


def flatten_dotted(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``, so :func:`load_config` reports errors by dotted field."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_mapping(path: str | Path) -> dict:
    """Read a YAML or JSON file (local path or ``s3://`` URI) into a dict."""

    text = read_text(str(path))
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(model: type[M], path: str | Path | None = None,
                overrides: Iterable[str] | dict[str, Any] = ()) -> M:
    """Build ``model`` from an optional file plus dotted overrides.

    Raises:
        ConfigError: on an unknown field, a wrong type or a broken cross-field rule, with the
            field path and pydantic's explanation.
    """
    data = read_mapping(path) if path else {}
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        set_dotted(data, key, value)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}"
                             for e in err.errors())
        valid = ", ".join(model.model_fields)
        raise ConfigError(f"invalid {model.__name__} ({problems}). Top-level fields: {valid}") from None


def dump_config(config: BaseModel) -> str:
    """YAML text that :func:`load_config` reads back into an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
