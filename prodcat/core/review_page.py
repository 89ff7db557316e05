"""A review page a person would rather look at than read: one self-contained HTML file.

Each *card* is one thing to decide (a source category to map, a proposed subcategory to accept):
example products with their images (inlined as small JPEG data URIs, so the file works offline,
attached to a ticket or opened from ``s3://`` downloads), the options with their evidence, and the
controls to decide. The page sorts the cards by any of their numbers (``#sort=<key>&order=asc`` in
the URL picks the first order) and writes the decisions as YAML into a text box with a download
link, which the matching command reads (``prodcat catalog review --decisions``, ``prodcat
recategorize apply``). Used by :mod:`prodcat.onboard` and :mod:`prodcat.recategorize`.

No request leaves the page: no scripts, fonts or images from elsewhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field

from prodcat.core import storage


@dataclass
class Example:
    """An example product: its title, its image as a data URI (or None) and a short note."""

    title: str
    image: str | None = None
    note: str = ""


@dataclass
class Card:
    """One decision.

    Attributes:
        key: what the decision is about (a source category path, ``<category>/<cluster>``).
        heading: the card's title.
        summary: one line under it (HTML-escaped here).
        sort: ``{sort key: number}`` the page sorts by (keys of the page's ``sort_keys``).
        examples: products to look at.
        evidence_headers, evidence: a small table (one row per option) of what speaks for each.
        controls: the card's decision controls (HTML, written by the caller: radio buttons,
            inputs; their values are read by the caller's ``writer`` script).
        badge: a short figure shown large (e.g. the confidence).
        tone: ``good``, ``fair`` or ``poor``: the badge's colour.
        data: more ``data-*`` attributes of the card (what the page's writer script reads).
    """

    key: str
    heading: str
    summary: str = ""
    sort: dict[str, float] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)
    evidence_headers: list[str] = field(default_factory=list)
    evidence: list[list[str]] = field(default_factory=list)
    controls: str = ""
    badge: str = ""
    tone: str = "fair"
    data: dict[str, str] = field(default_factory=dict)


def thumbnail(uri: str | None, size: int = 112) -> str | None:
    """A JPEG data URI of the image at ``uri`` (local or ``s3://``), at most ``size`` px a side;
    None when there is no image or it cannot be read (the page then shows a placeholder)."""
    if not uri:
        return None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(storage.read_bytes(uri))) as img:
            img.draft("RGB", (size, size))
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a missing or broken image is a placeholder on the page
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 22px;position:sticky;top:0;z-index:2}
header h1{font-size:19px;margin:0 0 4px}header p{margin:2px 0;color:#c9cfdb;max-width:1100px}
.bar{display:flex;gap:14px;align-items:center;margin-top:8px;flex-wrap:wrap}
.bar select,.bar input,.bar button{font:inherit;padding:3px 6px}
main{padding:14px 22px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;margin:0 0 14px;padding:12px 16px;
display:grid;grid-template-columns:minmax(280px,1fr) minmax(380px,1.3fr);gap:14px}
.card h2{font-size:16px;margin:0 0 2px;grid-column:1/-1;display:flex;justify-content:space-between}
.card .summary{grid-column:1/-1;color:#555;margin:-6px 0 2px}
.badge{font-size:15px;padding:2px 10px;border-radius:12px;color:#fff}
.good{background:#1b873f}.fair{background:#b58105}.poor{background:#b3261e}
.examples{display:flex;flex-wrap:wrap;gap:8px;align-content:flex-start}
figure{margin:0;width:118px}figure img,figure .noimg{width:112px;height:112px;object-fit:contain;
background:#eef0f3;border-radius:4px;display:block}figure .noimg{display:flex;align-items:center;
justify-content:center;color:#999;font-size:12px}
figcaption{font-size:11.5px;line-height:1.25;margin-top:3px;word-wrap:break-word}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:3px 6px;
border-bottom:1px solid #e3e6ea;vertical-align:top}th{color:#555;font-weight:600}
.share{display:inline-block;height:8px;background:#3b6fd8;border-radius:4px;vertical-align:middle;margin-right:4px}
.controls{margin-top:8px}.controls label{margin-right:12px;white-space:nowrap}
.controls input[type=text],.controls input[type=number]{width:150px}
textarea{width:100%;height:180px;font:12px monospace}
footer{padding:0 22px 30px}
"""

_SCRIPT = """
function sortCards(key, order){
  const box=document.getElementById('cards');
  const cards=[...box.children];
  const sign=order==='asc'?1:-1;
  cards.sort((a,b)=>{const x=parseFloat(a.dataset['sort_'+key]),y=parseFloat(b.dataset['sort_'+key]);
    const u=isNaN(x)?-Infinity:x, v=isNaN(y)?-Infinity:y; return sign*(u-v)||a.dataset.index-b.dataset.index;});
  cards.forEach(c=>box.appendChild(c));
  document.body.dataset.sorted=key+':'+order;
  document.getElementById('sort').value=key;document.getElementById('order').value=order;
}
function applyHash(){
  const p=new URLSearchParams(location.hash.slice(1));
  sortCards(p.get('sort')||DEFAULT_SORT, p.get('order')||'desc');
  if(typeof pageHash==='function') pageHash(p);
}
function filterCards(text){
  text=text.toLowerCase();
  for(const c of document.getElementById('cards').children)
    c.style.display=c.textContent.toLowerCase().includes(text)?'':'none';
}
function q(s){return JSON.stringify(String(s));}
function refresh(){
  const text=writeDecisions([...document.querySelectorAll('.card')]);
  const box=document.getElementById('decisions');
  box.value=text; box.textContent=text;
  document.getElementById('download').href='data:text/yaml;charset=utf-8,'+encodeURIComponent(text);
}
document.addEventListener('DOMContentLoaded',()=>{
  applyHash(); refresh();
  document.getElementById('sort').onchange=e=>sortCards(e.target.value,document.getElementById('order').value);
  document.getElementById('order').onchange=e=>sortCards(document.getElementById('sort').value,e.target.value);
  document.getElementById('filter').oninput=e=>filterCards(e.target.value);
  document.getElementById('cards').addEventListener('change',refresh);
  document.getElementById('cards').addEventListener('input',refresh);
  window.addEventListener('hashchange',applyHash);
});
"""


def _figure(x: Example) -> str:
    image = (f'<img src="{html.escape(x.image)}" alt="">' if x.image
             else '<div class="noimg">no image</div>')
    note = f"<br><i>{html.escape(x.note)}</i>" if x.note else ""
    return f"<figure>{image}<figcaption>{html.escape(x.title)}{note}</figcaption></figure>"


def _card(index: int, card: Card) -> str:
    e = html.escape
    sort_attrs = " ".join([f'data-sort_{e(k)}="{float(v):.6g}"' for k, v in card.sort.items()]
                          + [f'data-{e(k)}="{e(str(v))}"' for k, v in card.data.items()])
    figures = "".join(_figure(x) for x in card.examples)
    table = ""
    if card.evidence_headers:
        table = ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in card.evidence_headers) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                           for row in card.evidence) + "</table>")
    badge = f'<span class="badge {e(card.tone)}">{e(card.badge)}</span>' if card.badge else ""
    return (f'<section class="card" data-index="{index}" data-key="{e(card.key)}" {sort_attrs}>'
            f"<h2><span>{e(card.heading)}</span>{badge}</h2>"
            + (f'<div class="summary">{e(card.summary)}</div>' if card.summary else "")
            + f'<div class="examples">{figures}</div><div>{table}'
            f'<div class="controls">{card.controls}</div></div></section>')


def share_bar(share: float) -> str:
    """HTML: a bar ``share`` (in [0, 1]) long and the percentage."""
    return f'<span class="share" style="width:{max(2, round(80 * share))}px"></span>{100 * share:.0f} %'


def render_page(title: str, intro: list[str], cards: list[Card], sort_keys: dict[str, str],
                default_sort: str, writer: str, decisions_help: str, tools: str = "",
                download: str = "decisions.yaml") -> str:
    """The whole page as one HTML string.

    Args:
        intro: lines under the title (HTML-escaped here).
        sort_keys: ``{key: label}`` of the numbers cards can be sorted by.
        default_sort: the key the page sorts by (descending) unless the URL says otherwise.
        writer: JavaScript defining ``function writeDecisions(cards)`` that returns the decisions
            as YAML text from the cards' controls (``q(s)`` quotes a string for YAML).
        decisions_help: what to do with the decisions file (HTML-escaped here).
        tools: more controls for the top bar (HTML); the writer may define ``pageHash(params)``
            to read its own URL parameters.
        download: the file name the decisions download as.
    """
    e = html.escape
    options = "".join(f'<option value="{e(k)}">{e(v)}</option>' for k, v in sort_keys.items())
    return "".join([
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{e(title)}</h1>", "".join(f"<p>{e(line)}</p>" for line in intro),
        '<div class="bar"><label>Sort by <select id="sort">', options, "</select></label>",
        '<select id="order"><option value="desc">highest first</option>'
        '<option value="asc">lowest first</option></select>',
        '<label>Find <input id="filter" placeholder="words in titles or paths"></label>', tools,
        f"<span>{len(cards)} to review</span></div></header>",
        '<main id="cards">', "".join(_card(i, c) for i, c in enumerate(cards)), "</main>",
        f"<footer><h2>Your decisions</h2><p>{e(decisions_help)}</p>",
        f'<p><a id="download" download="{e(download)}" href="#">Download {e(download)}</a></p>',
        '<textarea id="decisions" readonly></textarea></footer>',
        f"<script>const DEFAULT_SORT={json.dumps(default_sort)};{_SCRIPT}{writer}</script>",
        "</body></html>"])
