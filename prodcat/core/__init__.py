"""What every stage shares, and nothing stage-specific.

- :class:`Taxonomy` (``taxonomy.py``): the hierarchy as one object (integer nodes, a parent array,
  per-level class indices, child masks); nothing else parses category paths.
- the one hierarchical metric (``metrics.py``): :func:`hierarchical_prf` (hP/hR/hF),
  per-level accuracy and macro-F1, path consistency.
- typed configuration (``config.py``): :class:`StrictModel`, :func:`load_config` with
  ``field.sub=value`` overrides; :class:`Registry` (``registry.py``) for swappable parts.
- where things live (``paths.py``: the ``../shared`` resolver; ``storage.py``: local paths and
  ``s3://`` through pyarrow) and the data contracts' Arrow schemas (``schema.py``).
- starting or joining Ray (``runtime.py``), what a person sees on the terminal (``console.py``:
  progress lines, Ray's logs to the run folder) and the one report helper (``report.py``:
  Markdown tables, PNG plots).

Importing a package of prodcat is cheap: a name loads its module the first time it is used.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["storage", "report", "console"],
    submod_attrs={
        "taxonomy": ["Taxonomy", "load_google_taxonomy", "SEPARATOR"],
        "metrics": ["hierarchical_prf", "hierarchical_counts", "prf_from_counts", "level_metrics", "path_consistency", "valid_paths", "hierarchical_metrics"],
        "config": ["StrictModel", "ConfigError", "load_config", "dump_config", "read_mapping"],
        "registry": ["Registry"],
        "paths": ["shared_dir", "shared_path", "SharedDirMissing", "REPO_ROOT"],
        "runtime": ["ensure_ray", "torch_device"],
        "schema": ["PRODUCT_SCHEMA", "REJECT_SCHEMA", "PREDICTION_SCHEMA", "SPLITS"],
    },
)
