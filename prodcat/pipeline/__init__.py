"""The main job: every stage in order into one run folder, and its report.

``job.py`` (:class:`Pipeline`: the steps of :data:`prodcat.core.stages.MAIN_JOB_STEPS`, catalog →
embed → train → evaluate → recategorize → cascade → score → onboard → serve demo → report, each
stage through
the same entry point as its ``prodcat`` subcommand), ``demo.py``
(the service started, real products categorized over HTTP, stopped), ``report.py``
(``report.md``: every figure read back from a stage's output files).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "job": ["Pipeline", "PipelineConfig"],
        "report": ["write_report"],
        "demo": ["serve_demo"],
    },
)
