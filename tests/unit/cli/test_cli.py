"""Every subcommand answers --help, and importing prodcat has no side effects."""

import os
import pkgutil
import subprocess
import sys

import pytest

import prodcat.cli
import prodcat.core.stages
from prodcat.cli import main

pytestmark = pytest.mark.unit

COMMANDS = [m.name.replace("_", "-") for m in pkgutil.iter_modules(prodcat.cli.__path__)]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: prodcat " + command in capsys.readouterr().out


def test_catalog_build_help_explains_outputs(capsys):
    with pytest.raises(SystemExit):
        main(["catalog", "build", "--help"])
    out = capsys.readouterr().out
    assert "products.parquet" in out and "--sample-per-category" in out


PACKAGES = list(prodcat.core.stages.PACKAGES)


def test_import_has_no_side_effects(tmp_path):
    """Importing every package (and the typed configs) starts nothing, loads neither Ray nor
    torch, and writes nothing."""
    code = ("import sys, prodcat, " + ", ".join(f"prodcat.{p}" for p in PACKAGES) + ";"
            "import prodcat.core.taxonomy, prodcat.catalog.build;"
            "from prodcat.models.config import ModelConfig; from prodcat.train.config import TrainConfig;"
            "from prodcat.models.registry import fusions; ModelConfig(fusion='attention');"
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules, "
            "[m for m in ('ray', 'torch') if m in sys.modules]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_service_ingress_never_loads_torch(tmp_path):
    """The HTTP ingress (prodcat.serve.app, with the cascade spec it resolves) reads checkpoints'
    JSON only; the stage replicas load torch."""
    code = ("import sys, prodcat.serve.app, prodcat.cascade.spec;"
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_of_a_package_resolves(package):
    """Each package's docstring names its stage; every name in its public surface loads."""
    import importlib

    module = importlib.import_module(f"prodcat.{package}")
    assert module.__doc__ and len(module.__doc__.strip()) > 80
    for name in getattr(module, "__all__", []):
        assert getattr(module, name) is not None, name


def test_a_command_sets_its_log_folder_and_verbosity_for_its_run_only(tmp_path, monkeypatch):
    """`--output` names Ray's log folder (`<output>/_logs`) and `--verbose` the verbosity while the
    command runs; after it the environment is as before, so a later call in the same process (a
    test, a notebook) does not write its Ray log under the first call's folder (the route by which
    a relative `--output s` once left s/_logs/ray.log in the checkout)."""
    from prodcat.core import console
    from prodcat.embed import pipeline

    monkeypatch.delenv(console.LOG_DIR_ENV, raising=False)
    monkeypatch.setenv(console.VERBOSE_ENV, "0")
    seen = []
    monkeypatch.setattr(pipeline, "run_embedding",
                        lambda config, overwrite=False: seen.append((console.log_dir(), console.verbose())))
    out = tmp_path / "store"
    assert main(["embed", "--products", "x.parquet", "--output", str(out), "--verbose"]) == 0
    assert seen == [(out / "_logs", True)]
    assert console.LOG_DIR_ENV not in os.environ and not console.verbose()
    # a folder set by the caller (the main job sets <run>/logs) wins and is kept
    monkeypatch.setenv(console.LOG_DIR_ENV, str(tmp_path / "logs"))
    assert main(["embed", "--products", "x.parquet", "--output", str(out)]) == 0
    assert seen[-1] == (tmp_path / "logs", False) and console.log_dir() == tmp_path / "logs"
