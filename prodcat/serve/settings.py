"""Reading the Serve config (``serve/config.yaml``) and turning it into application arguments.

The same YAML deploys with ``serve deploy serve/config.yaml`` on a cluster and runs locally with
``prodcat serve``; its first application's ``args`` are :class:`prodcat.serve.schemas.AppArgs`.
"""

from __future__ import annotations

import json
from pathlib import Path

from prodcat.core import storage
from prodcat.core.config import parse_override, read_mapping, set_dotted
from prodcat.core.paths import REPO_ROOT

#: the repository's Serve config, relative to the repository root
DEFAULT_CONFIG = "serve/config.yaml"


def load_serve_config(path: str | None = None) -> dict:
    """The Serve config YAML as a dict (the repository's ``serve/config.yaml`` by default).

    Raises:
        FileNotFoundError: when the file does not exist.
    """
    return read_mapping(path or str(REPO_ROOT / DEFAULT_CONFIG))


#: where Ray Serve runs HTTP proxies (``proxy_location`` in the Serve config)
PROXY_LOCATIONS = ("HeadOnly", "EveryNode", "Disabled")


def start_options(config: dict, host: str | None = None, port: int | None = None) -> dict:
    """Keyword arguments of ``ray.serve.start`` from a Serve config: ``proxy_location`` (default
    ``HeadOnly``, as ``serve deploy`` does) and ``http_options`` (``host``/``port`` given here win
    over the config's; defaults 127.0.0.1:8000).

    Raises:
        ValueError: an unknown ``proxy_location`` (the message lists the valid ones).
    """
    proxy = config.get("proxy_location") or "HeadOnly"
    if proxy not in PROXY_LOCATIONS:
        raise ValueError(f"proxy_location: {proxy!r} is not one of {', '.join(PROXY_LOCATIONS)}")
    http = dict(config.get("http_options") or {})
    http["host"] = host or http.get("host", "127.0.0.1")
    http["port"] = port or http.get("port", 8000)
    return {"proxy_location": proxy, "http_options": http}


def app_args(config: dict, overrides: list[str]) -> dict:
    """The first application's ``args`` with ``--set field.sub=value`` overrides applied."""
    apps = config.get("applications") or [{}]
    args = json.loads(json.dumps(apps[0].get("args") or {}))
    for item in overrides:
        set_dotted(args, *parse_override(item))
    return args


def locate(path: str | None) -> str | None:
    """A relative path as given when it exists from the working directory, else under the
    repository root (replicas and ``serve deploy`` may run elsewhere); absolute when found."""
    if not path or storage.is_remote(path) or Path(path).is_absolute():
        return path
    for base in (Path.cwd(), REPO_ROOT):
        if (base / path).exists():
            return str((base / path).resolve())
    return path
