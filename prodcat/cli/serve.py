"""Run the cascade service locally (the same application ``serve deploy serve/config.yaml``
deploys on a cluster), with the config's ``proxy_location`` and ``http_options``.

  prodcat serve                                   # serve/config.yaml, http://127.0.0.1:8000
  prodcat serve --port 8080 --set cascade=runs/sample/cascade
  prodcat serve --set multimodal_stage.num_gpus=1 --set limits.max_products=16
  prodcat serve --check                           # validate the config and the models, then exit

  curl -s localhost:8000/v1/categorize -H 'content-type: application/json' \\
       -d '{"products": [{"title": "Puma Men Black Running Shoes"}]}'
"""

from __future__ import annotations

import argparse
import json
import signal
import threading

from prodcat.core.runtime import ensure_ray
from prodcat.serve.settings import DEFAULT_CONFIG, app_args, load_serve_config, start_options

HELP = "run the cascade HTTP service locally on Ray Serve (serve/config.yaml)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help=f"Serve config YAML (default: {DEFAULT_CONFIG} in the repository)")
    parser.add_argument("--host", help="HTTP host (default: the config's, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default: the config's, else 8000)")
    parser.add_argument("--address", help="join this Ray cluster instead of starting one")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override an application arg (prodcat.serve.schemas.AppArgs), e.g. "
                        "--set threshold=0.8")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and load both checkpoints' metadata, then exit")


def run(args: argparse.Namespace) -> int:
    # lazy: stage modules load torch and Ray; importing them here keeps 'prodcat --help' fast
    from prodcat.serve.app import build_app

    config = load_serve_config(args.config)
    app_cfg = (config.get("applications") or [{}])[0]
    build_args = app_args(config, args.set)
    options = start_options(config, args.host, args.port)    # proxy_location and http_options
    http = options["http_options"]

    application = build_app(build_args)
    if args.check:
        print(json.dumps({"ok": True, "args": build_args}, indent=2))
        return 0
    from ray import serve

    ensure_ray(args.address)
    serve.start(**options)
    serve.run(application, name=app_cfg.get("name", "prodcat"),
              route_prefix=app_cfg.get("route_prefix", "/"))
    url = f"http://{http['host']}:{http['port']}"
    print(f"prodcat serving on {url}  (POST {url}/v1/categorize, docs at {url}/docs); Ctrl-C stops",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    return 0
