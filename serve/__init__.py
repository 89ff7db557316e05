"""The Ray Serve application of prodcat (``serve.app:build_app``); see ``serve/config.yaml``.

Ray's own package is ``ray.serve``; import it as ``from ray import serve``. Importing this package
starts nothing.
"""
