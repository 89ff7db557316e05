"""Stage 11, serving: the cascade as an HTTP service on Ray Serve.

``app.py`` (the FastAPI ingress and the two stage deployments, composed by handles;
``build_app`` is the application builder named in ``serve/config.yaml``), ``schemas.py`` (the
request/response models and the typed application arguments), ``inputs.py`` (per-product checks:
text limits, base64, image bytes and pixels), ``fetch.py`` (image URLs fetched without becoming an
SSRF proxy), ``settings.py`` (reading ``serve/config.yaml`` and ``--set`` overrides).
Ray's own package is ``ray.serve``; import it as ``from ray import serve``.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "app": ["build_app"],
        "schemas": ["AppArgs", "CategorizeRequest", "CategorizeResponse"],
        "settings": ["load_serve_config", "app_args"],
    },
)
