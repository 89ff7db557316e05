"""The review pages in a real headless Chromium (Debian's package; `.ci/run` installs it): the
mapping suggestions' page and the recategorization proposals' page load with their images, sort
by the URL's order, tick what the URL asks, render (a screenshot), and write decisions the
commands accept. Without Chromium these tests fail, saying how to install it."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from prodcat.catalog.review import categories_fingerprint, load_decisions, review_mapping
from prodcat.onboard.page import write_review_page
from prodcat.onboard.suggest import CategorySuggestion, vote
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.integration

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RED = (220, 20, 30)


def chromium() -> str:
    """The Chromium binary; fails (never skips) when it is missing."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed, and these tests check the review pages in a real "
                "headless browser: install Debian's package with `apt-get update && apt-get install "
                "-y chromium` (.ci/run does it before the tests)")


def browse(page: Path, fragment: str, tmp_path: Path, name: str) -> tuple[str, Path]:
    """``(DOM after the page's scripts ran, screenshot PNG)`` of ``page`` + ``fragment``, each in
    a fresh, empty profile."""
    binary, url = chromium(), page.as_uri() + fragment
    runs = []
    for kind in ("dom", "shot"):
        profile = tmp_path / f"{name}-{kind}-profile"
        profile.mkdir()
        extra = (["--virtual-time-budget=5000", "--dump-dom"] if kind == "dom" else
                 ["--window-size=1280,1600", "--hide-scrollbars", f"--screenshot={tmp_path / name}.png"])
        runs.append(subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                                   capture_output=True, text=True, timeout=180, cwd=tmp_path))
    assert runs[0].returncode == 0, runs[0].stderr[-2000:]
    assert runs[1].returncode == 0, runs[1].stderr[-2000:]
    return runs[0].stdout, tmp_path / f"{name}.png"


def _image(path: Path, colour) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (60, 80), colour).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue())
    return str(path)


def _red_share(png: Path) -> float:
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"), np.int16)
    return float((np.abs(pixels - np.array(RED)).sum(axis=2) < 60).mean())


def _items(tmp_path: Path) -> list[CategorySuggestion]:
    tax = toy_taxonomy()
    spec = [("Footwear > Winter boots", [3, 3, 3, 4], 0.9), ("Kitchen > Cups", [8, 9], 0.6),
            ("Living > Ornaments", [9, 9, 8, 9, 9], 0.8), ("Clothing > Tops", [5], 0.3)]
    items = []
    for i, (src, ids, conf) in enumerate(spec):
        item = CategorySuggestion(src, 10 * (i + 1), len(ids))
        item.candidates = vote([src] * len(ids), ids, [conf] * len(ids), tax)[src]
        item.examples = [{"title": f"product {i}.{k}", "answer": tax.path_of_id(ids[0]),
                          "image_uri": _image(tmp_path / f"p{i}_{k}.jpg", RED)} for k in range(2)]
        items.append(item)
    return items


def test_mapping_review_page_sorts_ticks_renders_and_writes_decisions_the_review_accepts(tmp_path):
    items = _items(tmp_path)
    page = Path(write_review_page(str(tmp_path / "review.html"), "shop", items,
                                  {"products": 100, "scored": 12, "model": "test"}))
    html = page.read_text()
    assert "http://" not in html and "https://" not in html           # self-contained
    assert html.count("data:image/jpeg;base64,") == 8
    dom, shot = browse(page, "#sort=confidence&order=asc&accept=0.5", tmp_path, "mapping")
    assert 'data-sorted="confidence:asc"' in dom                       # the page's script ran
    keys = re.findall(r'<section class="card" data-index="\d+" data-key="([^"]+)"', dom)
    by_conf = sorted(items, key=lambda s: s.confidence)
    assert keys == [s.source_category.replace(">", "&gt;") for s in by_conf]
    decisions_text = re.search(r'<textarea id="decisions" readonly="">(.*?)</textarea>', dom, re.S).group(1)
    decisions_text = decisions_text.replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    accepted = yaml.safe_load(decisions_text)["accept"]
    assert sorted(accepted) == sorted(s.source_category for s in items if s.confidence >= 0.5)
    assert len(accepted) == 2                                           # 0.54 and 0.53 of four
    # the screenshot shows the page with the products' images
    from PIL import Image

    assert Image.open(shot).size == (1280, 1600)
    assert _red_share(shot) > 0.005
    # the decisions go through `prodcat catalog review`
    cats = [s.source_category for s in items]
    suggestions = tmp_path / "mapping.yaml"
    suggestions.write_text(yaml.safe_dump({
        "platform": "shop", "suggested": {"platform": "shop", "fingerprint": categories_fingerprint(cats),
                                          "source_categories": cats},
        "mappings": {s.source_category: {"category_id": s.candidates[0].category_id, "accepted": False,
                                         "confidence": s.confidence} for s in items}}))
    (tmp_path / "decisions.yaml").write_text(decisions_text)
    doc, counts = review_mapping(str(suggestions), load_decisions(str(tmp_path / "decisions.yaml"), {}),
                                 toy_taxonomy())
    assert counts == {"accepted": 2, "excluded": 0, "unreviewed": 2}
    assert {k for k, v in doc["mappings"].items() if v["accepted"]} == set(accepted)


def test_recategorization_review_page_renders_and_writes_an_accept_file(tmp_path):
    from prodcat.recategorize.extension import AcceptFile
    from prodcat.recategorize.page import write_review_page as write_recategorize_page

    clusters = []
    for k, size in enumerate([30, 11, 18]):
        clusters.append({"cluster": k, "size": size, "platforms": {"hm": size // 2, "myntra": size - size // 2},
                         "name": f"Name {k}", "terms": ["a", "b"], "first_level_cluster": 0,
                         "label_mix": {"myntra:Sports Shoes": size - 2, "hm:Sneakers": 2},
                         "examples": [{"product_id": f"hm:{k}{j}", "platform": "hm", "title": f"shoe {k}.{j}",
                                       "finer_label": "Shoes > Sneakers",
                                       "image_uri": _image(tmp_path / f"c{k}_{j}.jpg", RED)}
                                      for j in range(3)]})
    summary = {"taxonomy_version": "google-2021-09-21", "categories": [{
        "category_id": 187, "path": "Apparel & Accessories > Shoes", "fingerprint": "abc123",
        "clusters": clusters}]}
    page = Path(write_recategorize_page(str(tmp_path), summary))
    dom, shot = browse(page, "#sort=size&order=asc", tmp_path, "recategorize")
    keys = re.findall(r'data-key="187/(\d+)"', dom)
    assert keys == ["1", "2", "0"]                                     # sizes 11, 18, 30
    text = re.search(r'<textarea id="decisions" readonly="">(.*?)</textarea>', dom, re.S).group(1)
    text = text.replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    review = AcceptFile.model_validate(yaml.safe_load(text))
    assert review.categories[0].proposals == "abc123"
    assert {c.name for c in review.categories[0].clusters} == {"Name 0", "Name 1", "Name 2"}
    assert not any(c.accept for c in review.categories[0].clusters)
    assert _red_share(shot) > 0.005
