"""The page the ingress serves at ``GET /``: search items by title, build a history, see the recommendations.

Self-contained (inline CSS and JavaScript, no CDN: it works on a machine without internet). It calls the
service's own endpoints: ``GET /search?q=`` (titles), ``POST /recommend``, ``GET /search?ids=`` (titles of
the recommended items) and ``GET /metadata``. Relative URLs, so it works under any route prefix.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>raygr: try the recommender</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; padding: 0 1em; color: #222; }
 h1 { font-size: 1.4em; margin: 0 0 .2em; } #meta { color: #666; margin-bottom: 1em; }
 .cols { display: flex; gap: 2em; flex-wrap: wrap; } .col { flex: 1; min-width: 20em; }
 input[type=text] { width: 70%; padding: .35em; } button { padding: .35em .8em; cursor: pointer; }
 li { margin: .2em 0; } .id { color: #888; font-size: .85em; } .score { font-variant-numeric: tabular-nums; }
 table { border-collapse: collapse; width: 100%; }
 td, th { border-bottom: 1px solid #ddd; padding: .3em; text-align: left; }
 #error { color: #b00; }
</style></head>
<body>
<h1>raygr: retrieve-then-rank, live</h1>
<div id="meta">loading&hellip;</div>
<div class="cols">
 <div class="col">
  <h2>1. Search the catalogue</h2>
  <form id="search"><input id="q" type="text" placeholder="title words, e.g. lip gloss" autofocus>
   <button type="submit">Search</button></form>
  <ul id="found"></ul>
 </div>
 <div class="col">
  <h2>2. History (oldest first)</h2>
  <ol id="history"></ol>
  <p>k <input id="k" type="number" min="1" value="10" style="width:4em">
   <button id="go">Recommend</button> <button id="clear">Clear</button></p>
 </div>
</div>
<h2>3. Recommendations</h2>
<div id="error"></div><div id="info"></div>
<table><thead><tr><th>#</th><th>item</th><th>score</th></tr></thead><tbody id="recs"></tbody></table>
<script>
const history = [];  // [{item_id, title}]
const el = id => document.getElementById(id);
function li(item, label, act) {
  const node = document.createElement("li");
  node.textContent = item.title + " ";
  const span = document.createElement("span"); span.className = "id"; span.textContent = "(" + item.item_id + ") ";
  const b = document.createElement("button"); b.textContent = label; b.onclick = act;
  node.append(span, b); return node;
}
function drawHistory() {
  el("history").replaceChildren(...history.map((it, i) =>
    li(it, "remove", () => { history.splice(i, 1); drawHistory(); })));
}
async function getJSON(url, init) {
  const r = await fetch(url, init); const body = await r.json();
  if (!r.ok) throw new Error(body.error || JSON.stringify(body));
  return body;
}
el("search").onsubmit = async ev => {
  ev.preventDefault();
  try {
    const res = await getJSON("search?limit=20&q=" + encodeURIComponent(el("q").value));
    el("found").replaceChildren(...res.items.map(it => li(it, "add", () => { history.push(it); drawHistory(); })));
  } catch (e) { el("error").textContent = e.message; }
};
el("clear").onclick = () => {
  history.length = 0; drawHistory(); el("recs").replaceChildren(); el("info").textContent = "";
};
el("go").onclick = async () => {
  el("error").textContent = "";
  try {
    const ans = await getJSON("recommend", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({history: history.map(it => it.item_id), k: Number(el("k").value) || 10})});
    const ids = ans.items.map(it => it.item_id);
    const query = ids.map(i => "ids=" + encodeURIComponent(i)).join("&");
    const titles = ids.length ? (await getJSON("search?" + query)).items : [];
    const byId = Object.fromEntries(titles.map(t => [t.item_id, t.title]));
    el("recs").replaceChildren(...ans.items.map((it, i) => {
      const tr = document.createElement("tr");
      const name = (byId[it.item_id] || it.item_id) + "  (" + it.item_id + ")";
      for (const text of [String(i + 1), name, it.score.toFixed(4)]) {
        const td = document.createElement("td"); td.textContent = text; tr.append(td);
      }
      return tr;
    }));
    el("info").textContent = "scored by " + ans.scored_by + ", " + ans.num_candidates + " candidates, model version "
      + ans.model_version + (ans.fallback ? " (empty history: most popular items)" : "");
  } catch (e) { el("error").textContent = e.message; }
};
getJSON("metadata").then(m => {
  el("meta").textContent = m.model + " on " + m.dataset + " (" + m.catalogue_size + " items), model version "
    + m.model_version + ", max history " + m.max_history;
}).catch(e => { el("meta").textContent = "metadata: " + e.message; });
el("search").requestSubmit();  // the most popular items to start from
</script>
</body></html>
"""
