// Search: by text (collections with an embedder) or "more like this" from a point id; k, a JSON filter,
// include columns; the hits as a table, the latency, and the same request as curl and as a Python call.
import {enc, get, post} from "./api.js";
import {copyBlock, errorBox, fmtNum, h, mount, table} from "./dom.js";

const DEFAULT_INCLUDED = 6;

// A Python literal for a JSON value (true → True, null → None ...).
export function pyLiteral(v) {
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : `float("${v}")`;
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(pyLiteral).join(", ")}]`;
  return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${pyLiteral(x)}`).join(", ")}}`;
}

const shellQuote = (s) => `'${s.replace(/'/g, "'\\''")}'`;

export function curlCommand(origin, name, body, auth) {
  const lines = [`curl -sS -X POST ${shellQuote(`${origin}/v1/collections/${enc(name)}/search`)}`];
  if (auth) lines.push(`-H "Authorization: Bearer $VQSEARCH_API_KEY"`);
  lines.push(`-H 'Content-Type: application/json'`, `-d ${shellQuote(JSON.stringify(body))}`);
  return lines.join(" \\\n  ");
}

export function pythonCall(origin, name, body, auth) {
  const vectors = body.vectors !== undefined;
  const args = [vectors ? `np.array(${pyLiteral(body.vectors)}, dtype=np.float32)` : pyLiteral(body.texts),
    `k=${body.k}`];
  if (body.filter) args.push(`filter=${pyLiteral(body.filter)}`);
  if (body.include && body.include.length) args.push(`include=${pyLiteral(body.include)}`);
  const key = auth ? `, api_key=os.environ["VQSEARCH_API_KEY"]` : "";
  return [auth ? "import os\n" : "", vectors ? "import numpy as np\n" : "", "import vqsearch\n\n",
    `client = vqsearch.Client(${JSON.stringify(origin)}${key})\n`,
    `hits = client.collection(${JSON.stringify(name)}).search(${args.join(", ")})\n`].join("");
}

// Six significant digits: the copied request is exactly the one sent, and stays readable.
const round6 = (x) => +x.toPrecision(6);

export async function searchPage(main, session, name, params) {
  const {data} = await get("/v1/collections");
  const colls = data.collections.filter((c) => c.status !== "unavailable");
  if (!colls.length) {
    mount(main, h("h1", {}, "Search"), h("p", {class: "muted"}, "No collections yet: create one first."));
    return;
  }
  const c = colls.find((x) => x.name === name) || colls[0];
  const select = h("select", {id: "collection", onchange: () => { location.hash = `#/search/${enc(select.value)}`; }},
    colls.map((x) => h("option", {value: x.name, selected: x.name === c.name}, x.name)));
  const hasText = Boolean(c.embedder);
  const mode = {value: params.get("like") ? "like" : hasText ? "text" : "like"};
  const text = h("input", {id: "query-text", type: "search", size: 50, placeholder: "describe what you are looking for",
    value: params.get("q") || ""});
  const pointId = h("input", {id: "point-id", type: "number", min: 0, step: 1, placeholder: "point id",
    value: params.get("like") || ""});
  const k = h("input", {id: "k", type: "number", min: 1, max: 10000, value: params.get("k") || 10, size: 5});
  const filter = h("textarea", {id: "filter", rows: 3, cols: 50, spellcheck: "false",
    placeholder: '{"section": "python"}  or  {"year": {"gte": 2020}}'});
  filter.value = params.get("filter") || "";
  const filterStatus = h("div", {class: "filter-status", id: "filter-status"});
  const cols = c.metadata_columns || [];
  const boxes = cols.map((col, i) => h("label", {class: "check"},
    h("input", {type: "checkbox", name: "include", value: col, checked: i < DEFAULT_INCLUDED}), col));
  const out = h("div", {id: "results"});

  const checkFilter = () => {
    const raw = filter.value.trim();
    if (!raw) { mount(filterStatus); return {ok: true, value: null}; }
    try {
      const value = JSON.parse(raw);
      if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("a filter is a JSON object");
      mount(filterStatus, h("span", {class: "ok"}, "valid JSON (the server checks the columns and operators)"));
      return {ok: true, value};
    } catch (err) {
      mount(filterStatus, h("span", {class: "error-text"}, `invalid JSON: ${err.message}`));
      return {ok: false};
    }
  };
  filter.addEventListener("input", checkFilter);

  const textRow = h("div", {class: "row", id: "text-row"}, h("label", {for: "query-text"}, "Text "), text);
  const likeRow = h("div", {class: "row", id: "like-row"}, h("label", {for: "point-id"}, "More like point "), pointId,
    h("small", {class: "muted"}, " (its vector, decoded from the stored codes, is the query)"));
  const showMode = () => {
    textRow.hidden = mode.value !== "text";
    likeRow.hidden = mode.value !== "like";
  };
  const modeRadios = hasText ? h("div", {class: "row"}, [["text", "by text"], ["like", "more like a point"]].map(
    ([v, label]) => h("label", {class: "check"}, h("input", {type: "radio", name: "mode", value: v,
      checked: mode.value === v, onchange: () => { mode.value = v; showMode(); }}), label))) : null;
  showMode();

  const run = async (e) => {
    if (e) e.preventDefault();
    const f = checkFilter();
    if (!f.ok) return;
    const include = boxes.map((b) => b.querySelector("input")).filter((b) => b.checked).map((b) => b.value);
    const body = {k: Number(k.value) || 10};
    if (f.value) body.filter = f.value;
    if (include.length) body.include = include;
    mount(out, h("p", {class: "muted"}, "searching…"));
    try {
      if (mode.value === "text") {
        if (!text.value.trim()) { mount(out, errorBox("type a query text")); return; }
        body.texts = [text.value.trim()];
      } else {
        if (pointId.value === "") { mount(out, errorBox("give a point id")); return; }
        const {data: point} = await get(`/v1/collections/${enc(c.name)}/points/${enc(pointId.value)}?vector=true`);
        body.vectors = [point.vector.map(round6)];
      }
      const ordered = {...("texts" in body ? {texts: body.texts} : {vectors: body.vectors}), k: body.k,
        ...(body.filter ? {filter: body.filter} : {}), ...(body.include ? {include: body.include} : {})};
      const {data: res, ms} = await post(`/v1/collections/${enc(c.name)}/search`, ordered);
      renderResults(out, c, res.results[0] || [], include, ms, ordered, session, (id) => {
        mode.value = "like";
        pointId.value = id;
        if (modeRadios) modeRadios.querySelector('input[value="like"]').checked = true;
        showMode();
        run();
      });
    } catch (err) {
      if (err.status !== 401) mount(out, errorBox(err));
    }
  };

  mount(main,
    h("h1", {}, "Search"),
    h("form", {class: "card", id: "search-form", onsubmit: run},
      h("div", {class: "row"}, h("label", {for: "collection"}, "Collection "), select,
        h("span", {class: "muted"}, ` ${fmtNum(c.count)} points, ${c.dim}-d ${c.metric}`,
          hasText ? `, embedder ${c.embedder}` : ", no embedder: search by a point's vector")),
      modeRadios, textRow, likeRow,
      h("div", {class: "row"}, h("label", {for: "k"}, "k "), k),
      h("div", {class: "row"}, h("label", {for: "filter"}, "Filter (JSON) "), filter), filterStatus,
      cols.length ? h("div", {class: "row"}, h("span", {}, "Include "), boxes) : null,
      h("button", {type: "submit", id: "run-search"}, "Search")),
    out);
  if ((mode.value === "text" && text.value) || (mode.value === "like" && pointId.value)) await run();
}

function renderResults(out, c, hits, include, ms, body, session, like) {
  const columns = [
    {label: "#", class: "num", value: (hit) => hit.rank},
    {label: "id", class: "num", value: (hit) => hit.id},
    {label: c.metric === "l2" ? "distance²" : "score", class: "num", value: (hit) => hit.score.toFixed(4)},
    ...include.map((col) => ({label: col, value: (hit) => {
      const v = hit.metadata[col];
      return v === null || v === undefined ? h("span", {class: "muted"}, "null") : String(v);
    }})),
    {label: "", value: (hit) => h("button", {type: "button", class: "small link", onclick: () => like(hit.id)},
      "more like this")},
  ];
  const origin = location.origin;
  mount(out,
    h("p", {id: "latency"}, h("strong", {}, `${hits.length} hits`), ` in ${ms.toFixed(1)} ms `,
      h("span", {class: "muted"}, "(round trip from this browser, including the query's embedding)")),
    hits.length ? table(columns, hits.map((hit, i) => ({...hit, rank: i + 1})), {id: "hits"}) :
      h("p", {class: "muted"}, "No hits (empty collection, or nothing matches the filter)."),
    h("div", {class: "snippets"},
      copyBlock("curl", curlCommand(origin, c.name, body, session.auth), {id: "curl"}),
      copyBlock("Python", pythonCall(origin, c.name, body, session.auth), {id: "python"})));
}
