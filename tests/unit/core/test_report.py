"""The one report helper (prodcat.core.report): table formatting and README sections."""

import pytest

from prodcat.core.report import fmt, markdown_table, replace_section

pytestmark = pytest.mark.unit


def test_markdown_table_formats_numbers_one_way():
    table = markdown_table(["model", "hF", "n"], [["tfidf", 0.91344, 1234]])
    assert table.splitlines()[0] == "| model | hF | n |"
    assert "| tfidf | " + fmt(0.91344) + " | " + fmt(1234) + " |" in table


def test_replace_section_keeps_the_others_and_moves_the_new_one_last():
    doc = "# B\n\n## A\nold\n\n## C\nc\n"
    out = replace_section(doc, "## A", "## A\nnew\n")
    assert out == "# B\n\n## C\nc\n\n## A\nnew\n"
    assert "old" not in out
    assert replace_section(out, "## A", "## A\nnewer\n").count("## A") == 1
    assert replace_section("# B\n", "## Z", "## Z\nz\n") == "# B\n\n## Z\nz\n"
