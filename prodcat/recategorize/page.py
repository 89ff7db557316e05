"""``review.html`` of recategorization proposals: one card per proposed subcategory (its
representative products with their images, the platforms' own finer labels inside it, its terms),
sortable by size or by how pure it is; ticking "accept" and editing the name writes the
``accept.yaml`` that ``prodcat recategorize apply --accept`` reads (the page of
:mod:`prodcat.core.review_page`, like the mapping suggestions' page)."""

from __future__ import annotations

import html
import json

from prodcat.core import storage
from prodcat.core.review_page import Card, Example, render_page, share_bar, thumbnail

PAGE = "review.html"

WRITER = """
function writeDecisions(cards){
  const cats=new Map();
  for(const c of cards){
    const id=c.dataset.category;
    if(!cats.has(id)) cats.set(id,{path:c.dataset.path, proposals:c.dataset.proposals, clusters:[]});
    const name=c.querySelector('input.name').value.trim()||c.dataset.name;
    cats.get(id).clusters.push('  - cluster: '+c.dataset.cluster+'\\n    accept: '+
      (c.querySelector('input.accept').checked?'true':'false')+'\\n    name: '+q(name));
  }
  let out='# accept.yaml written by review.html; apply it with\\n'+
    '#   prodcat recategorize apply --proposals <this folder> --accept accept.yaml --output <new folder>\\n'+
    'taxonomy_version: '+q(TAXONOMY_VERSION)+'\\ncategories:\\n';
  for(const [id,c] of cats){
    out+='- category_id: '+id+'\\n  path: '+q(c.path)+'\\n  proposals: '+q(c.proposals)+'\\n  clusters:\\n'+
      c.clusters.join('\\n')+'\\n';
  }
  return out;
}
"""


def cards(summary: dict) -> list[Card]:
    """One card per proposed cluster of every category in ``recategorize.json``'s content."""
    out = []
    for entry in summary["categories"]:
        for c in entry["clusters"]:
            mix = sorted(c["label_mix"].items(), key=lambda kv: -kv[1])
            purity = mix[0][1] / max(c["size"], 1) if mix else 0.0
            e = html.escape
            controls = (f'<label><input type="checkbox" class="accept"> accept as a subcategory of '
                        f'{e(entry["path"].split(" > ")[-1])}</label> <label>name <input type="text" '
                        f'class="name" size="28" value="{e(c["name"])}"></label>')
            card = Card(
                key=f"{entry['category_id']}/{c['cluster']}",
                heading=f"{entry['path']} › cluster {c['cluster']}: {c['name']}",
                summary=(f"{c['size']} products ("
                         + ", ".join(f"{p} {n}" for p, n in c["platforms"].items())
                         + f"); terms: {', '.join(c['terms'])}"),
                sort={"size": c["size"], "purity": purity, "platforms": len(c["platforms"])},
                examples=[Example(x["title"], thumbnail(x.get("image_uri")),
                                  f"{x['platform']}: {str(x.get('finer_label', '')).split(' > ')[-1]}")
                          for x in c["examples"]],
                evidence_headers=["platform label inside", "products"],
                evidence=[[e(k), share_bar(v / max(c["size"], 1)) + f" <small>{v}</small>"]
                          for k, v in mix[:6]],
                controls=controls, badge=f"{c['size']} products",
                tone="good" if purity >= 0.8 else "fair" if purity >= 0.5 else "poor")
            card.data = {"category": str(entry["category_id"]), "path": entry["path"],
                         "proposals": entry["fingerprint"], "cluster": str(c["cluster"]),
                         "name": c["name"]}
            out.append(card)
    return out


def write_review_page(output: str, summary: dict) -> str:
    """Write ``<output>/review.html``; returns its location."""
    items = cards(summary)
    script = f"const TAXONOMY_VERSION={json.dumps(summary['taxonomy_version'])};" + WRITER
    text = render_page(
        "Recategorization proposals: finer subcategories found in the data",
        [f"{len(items)} proposed subcategories of {len(summary['categories'])} categor"
         f"{'y' if len(summary['categories']) == 1 else 'ies'} (taxonomy {summary['taxonomy_version']}).",
         "Each card: representative products with their images and the platform's own label, the "
         "platforms' labels inside the cluster (a pure cluster is mostly one), the c-TF-IDF terms. "
         "Tick the ones to add to the taxonomy, edit their names (two accepted clusters of one "
         "category with the same name become one node), then download accept.yaml."],
        items, {"size": "size", "purity": "share of its largest platform label",
                "platforms": "platforms"}, "size", script,
        "Apply it: prodcat recategorize apply --proposals <this folder> --accept accept.yaml "
        "--output <new catalogue folder>; it refuses a review made for other proposals.",
        download="accept.yaml")
    uri = storage.join(output, PAGE)
    storage.write_text(uri, text)
    return uri
