"""Every subcommand answers --help, and importing prodcat has no side effects."""

import pkgutil
import subprocess
import sys

import pytest

import prodcat.commands
from prodcat.cli import main

pytestmark = pytest.mark.unit

COMMANDS = [m.name.replace("_", "-") for m in pkgutil.iter_modules(prodcat.commands.__path__)]


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


def test_import_has_no_side_effects(tmp_path):
    code = ("import sys, prodcat, prodcat.cli, prodcat.taxonomy, prodcat.catalog.build;"
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules, "
            "[m for m in ('ray', 'torch') if m in sys.modules]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []
