"""``review.html`` of mapping suggestions: one card per source category (example products with
their images and the model's answers, the top suggestions with their evidence, a choice), sorted
by confidence; the decisions download as the YAML ``prodcat catalog review --decisions`` reads.
``#accept=0.2`` in the URL ticks every top suggestion at or above that confidence."""

from __future__ import annotations

import html

from prodcat.core import storage
from prodcat.core.review_page import Card, Example, render_page, share_bar, thumbnail

WRITER = """
function pageHash(p){
  const t=parseFloat(p.get('accept'));
  if(isNaN(t)) return;
  document.getElementById('accept_above').value=t; acceptAbove(t);
}
function acceptAbove(t){
  for(const c of document.querySelectorAll('.card')){
    const r=c.querySelector('input[value=accept]');
    if(r && parseFloat(c.dataset.sort_confidence)>=t) r.checked=true;
  }
  refresh();
}
function writeDecisions(cards){
  const acc=[], set=[], exc=[];
  for(const c of cards){
    const key=c.dataset.key, r=c.querySelector('input[type=radio]:checked');
    if(!r) continue;
    const v=r.value;
    if(v==='accept') acc.push('- '+q(key));
    else if(v.startsWith('id:')) set.push('  '+q(key)+': '+v.slice(3));
    else if(v==='other'){const n=c.querySelector('input.other').value.trim();
      if(/^[0-9]+$/.test(n)) set.push('  '+q(key)+': '+n);}
    else if(v==='exclude'){const t=c.querySelector('input.reason').value.trim()||'excluded in review';
      exc.push('  '+q(key)+': '+q(t));}
  }
  return '# decisions made in review.html; apply them with\\n'+
    '#   prodcat catalog review --suggestions mapping.yaml --decisions decisions.yaml --output reviewed.yaml\\n'+
    'accept:'+(acc.length?'\\n'+acc.join('\\n'):' []')+'\\n'+
    'set:'+(set.length?'\\n'+set.join('\\n'):' {}')+'\\n'+
    'exclude:'+(exc.length?'\\n'+exc.join('\\n'):' {}')+'\\n';
}
"""


def _tone(confidence: float) -> str:
    return "good" if confidence >= 0.7 else "fair" if confidence >= 0.4 else "poor"


def _controls(index: int, item) -> str:
    e = html.escape
    name = f"d{index}"
    parts = []
    for c in item.candidates:
        value = "accept" if c.rank == 1 else f"id:{c.category_id}"
        parts.append(f'<label><input type="radio" name="{name}" value="{value}"> '
                     f"{'accept' if c.rank == 1 else 'choose'} #{c.rank}</label>")
    parts.append(f'<label><input type="radio" name="{name}" value="other"> other id '
                 f'<input type="text" class="other" inputmode="numeric" placeholder="Google id"></label>')
    parts.append(f'<label><input type="radio" name="{name}" value="exclude"> exclude '
                 f'<input type="text" class="reason" placeholder="reason"></label>')
    parts.append(f'<label><input type="radio" name="{name}" value="undecided" checked> undecided</label>')
    return "".join(parts) + f"<div><small>{e(str(item.products))} products in the export</small></div>"


def cards(items) -> list[Card]:
    """One :class:`Card` per :class:`prodcat.onboard.suggest.CategorySuggestion`."""
    out = []
    for i, item in enumerate(items):
        top = item.candidates[0] if item.candidates else None
        rows = [[f"#{c.rank}", f"{html.escape(c.path)} <small>({c.category_id})</small>",
                 share_bar(c.share) + f" <small>{c.votes}/{item.scored}</small>",
                 f"{c.mean_confidence:.2f}",
                 "-" if c.name_similarity is None else f"{c.name_similarity:.2f}",
                 f"<b>{c.confidence:.2f}</b>"] for c in item.candidates]
        out.append(Card(
            key=item.source_category, heading=item.source_category,
            summary=(f"{item.products} products, {item.scored} scored; suggested: {top.path}"
                     if top else f"{item.products} products; no product could be categorized"),
            sort={"confidence": item.confidence, "products": item.products,
                  "share": top.share if top else 0.0,
                  "name": (top.name_similarity or 0.0) if top else 0.0},
            examples=[Example(e["title"], thumbnail(e.get("image_uri")),
                              "→ " + " > ".join(str(e.get("answer") or "?").split(" > ")[-2:]))
                      for e in item.examples],
            evidence_headers=["", "Google category", "products voting", "mean confidence",
                              "name similarity", "confidence"],
            evidence=rows, controls=_controls(i, item),
            badge=f"{item.confidence:.2f}", tone=_tone(item.confidence)))
    return out


def write_review_page(uri: str, platform: str, items, header: dict) -> str:
    """Write the review page of ``items``; returns ``uri``."""
    tools = ""
    text = render_page(
        f"Category mapping suggestions: {platform}",
        [f"{len(items)} source categories of {header.get('products', 0):,} products; "
         f"{header.get('scored', 0):,} were categorized by {header.get('model')}.",
         "Each card: example products with the model's answer (→), the top suggestions with the "
         "share of the category's products voting for each, their mean calibrated confidence, the "
         "similarity of the two category names, and the suggestion's confidence (share x mean "
         "confidence, lower when few products were scored). Choose per card, then download your "
         "decisions."],
        cards(items), {"confidence": "confidence", "products": "products", "share": "share voting",
                       "name": "name similarity"}, "confidence", WRITER,
        "Apply them: prodcat catalog review --suggestions mapping.yaml --decisions decisions.yaml "
        "[--exclude-rest] --output reviewed.yaml, then prodcat catalog build with the reviewed file "
        "as the adapter's mapping. Undecided categories stay unreviewed (a build refuses them) "
        "unless --exclude-rest leaves them out.",
        tools=('<label>Accept all ≥ <input id="accept_above" type="number" min="0" max="1" '
               'step="0.05" value="0.2" style="width:60px"></label> <button type="button" '
               "onclick=\"acceptAbove(parseFloat(document.getElementById('accept_above').value))\">"
               "tick</button>") + tools)
    storage.write_text(uri, text)
    return uri
