"""Text cleaning and the shared-folder resolver."""

import pytest

from prodcat.catalog.text import clean_text

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("raw, expected", [
    ("<p>Blue&nbsp;round neck<br>jersey</p>", "Blue round neck jersey"),
    ("Tom &amp; Jerry &lt;3", "Tom & Jerry <3"),
    ("  many\n\n  spaces\t here ", "many spaces here"),
    ("<p><strong>Composition</strong><br />Cotton</p>", "Composition Cotton"),
    ("", None), ("   ", None), (None, None), ("<p></p>", None),
])
def test_clean_text(raw, expected):
    assert clean_text(raw, 1000) == expected


def test_clean_text_caps_length_at_a_word():
    text = clean_text("word " * 100, 42)
    assert len(text) <= 42 and not text.endswith(" ") and text.endswith("word")


def test_resolver_env_var_and_clear_error(tmp_path, monkeypatch):
    from prodcat.core import paths

    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
    assert paths.shared_dir() == tmp_path
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(paths.SharedDirMissing, match="PRODCAT_SHARED_DIR"):
        paths.shared_dir()
