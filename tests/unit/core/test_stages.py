"""The stage order is defined once (prodcat.core.stages) and the command, the main job, the
package docstrings, docs/architecture.md and the README all agree with it."""

from __future__ import annotations

import importlib
import re

import pytest

from prodcat.core.paths import REPO_ROOT
from prodcat.core.stages import COMMANDS, MAIN_JOB_STEPS, PACKAGES, STAGES, stage

pytestmark = pytest.mark.unit

# how each stage is named in prose ("bulk scoring", "the service")
PROSE = {"catalog": r"catalog", "embed": r"embed", "train": r"train", "evaluate": r"evaluat",
         "recategorize": r"recategori", "cascade": r"cascade(?! clustering)", "score": r"scor(e|ing)\b",
         "onboard": r"onboard", "serve": r"serv(e|ice)\b", "report": r"report"}


def _in_order(text: str, names: list[str]) -> list[str]:
    """The names in the order they first appear in ``text``'s chain ``catalog … → …``."""
    start = re.search(PROSE[names[0]] + r"( build)? →", text).start()
    found = {n: re.search(PROSE[n], text[start:]) for n in names}
    missing = [n for n, m in found.items() if m is None]
    assert not missing, f"{missing} not named in: {text[:200]}..."
    return sorted(names, key=lambda n: found[n].start())


def test_every_package_of_prodcat_is_placed():
    on_disk = {p.name for p in (REPO_ROOT / "prodcat").iterdir()
               if (p / "__init__.py").exists()}
    assert on_disk == set(PACKAGES)


@pytest.mark.parametrize("s", STAGES, ids=lambda s: s.name)
def test_each_stage_package_docstring_starts_with_its_number(s):
    doc = importlib.import_module(f"prodcat.{s.name}").__doc__
    assert doc.startswith(f"Stage {s.number}, "), doc.splitlines()[0]


def test_the_command_lists_its_subcommands_in_stage_order():
    import pkgutil

    import prodcat.cli
    from prodcat.cli import build_parser

    modules = {m.name for m in pkgutil.iter_modules(prodcat.cli.__path__)}
    assert modules == set(COMMANDS), "place every prodcat/cli module in prodcat.core.stages"
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == list(COMMANDS)


def test_the_main_job_runs_its_stages_in_stage_order():
    from prodcat.pipeline.job import STAGES as PIPELINE_STAGES
    from prodcat.pipeline.job import Pipeline, PipelineConfig

    assert PIPELINE_STAGES == MAIN_JOB_STEPS
    assert PipelineConfig().stages == list(MAIN_JOB_STEPS)
    assert all(callable(getattr(Pipeline, f"stage_{name}", None)) for name in MAIN_JOB_STEPS)
    assert [s.name for s in STAGES if s.main_job] == list(MAIN_JOB_STEPS[:-1])


def test_the_main_job_docstrings_name_the_steps_in_order():
    import prodcat.cli.pipeline
    import prodcat.pipeline
    import prodcat.pipeline.job

    steps = list(MAIN_JOB_STEPS)
    for module in (prodcat.pipeline, prodcat.pipeline.job, prodcat.cli.pipeline):
        assert _in_order(module.__doc__, steps) == steps, module.__name__


def test_the_architecture_page_lists_the_packages_in_order_with_their_numbers():
    text = (REPO_ROOT / "docs/architecture.md").read_text()
    tree = text[text.index("```\nprodcat/\n"):]
    tree = tree[:tree.index("\n```", 4)]
    listed = re.findall(r"^  ([a-z]+)/ +(?:(\d+)\. )?", tree, re.M)
    assert [name for name, _ in listed] == list(PACKAGES)
    for name, number in listed:
        if name in {s.name for s in STAGES}:
            assert number == str(stage(name).number), name


def test_the_readme_stage_table_follows_the_main_job():
    text = (REPO_ROOT / "README.md").read_text()
    table = text[text.index("| stage | command |"):]
    table = table[:table.index("\n\n")]
    commands = [m.group(1) for row in table.splitlines()[2:]
                if (m := re.search(r"`prodcat ([a-z]+)", row))]
    assert commands == [c for s in STAGES if s.main_job for c in s.commands]


def test_an_unknown_stage_names_the_valid_ones():
    with pytest.raises(KeyError, match="catalog, embed"):
        stage("nope")
