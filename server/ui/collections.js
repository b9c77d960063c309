// Collections: the list (with sizes against float32), create and delete (admin keys), one collection's
// settings and its version history.
import {del, enc, get, post} from "./api.js";
import {errorBox, fmtBytes, fmtNum, fmtTime, h, mount, table} from "./dom.js";

// Compression against float32 vectors: "96 B (16.0× smaller)".
function bytesPerVector(c) {
  if (!c.bytes_per_vector) return "–";
  const ratio = (c.dim * 4) / c.bytes_per_vector;
  return h("span", {title: `${c.dim * 4} B as float32`}, `${c.bytes_per_vector} B `,
    h("span", {class: "muted"}, `(${ratio.toFixed(1)}× smaller)`));
}

// The estimated recall, if the server reports one (a number, or an object with a `recall`/`value` field).
export function estimatedRecall(c) {
  const r = c.estimated_recall ?? c.recall;
  if (r === undefined || r === null) return "–";
  const value = typeof r === "number" ? r : (r.recall ?? r.value ?? r.estimate);
  if (typeof value !== "number") return "–";
  const at = typeof r === "object" && r.k ? `@${r.k}` : "";
  return h("span", {title: JSON.stringify(r)}, `${value.toFixed(3)}${at}`);
}

const COLUMNS = [
  {label: "name", value: (c) => h("a", {href: `#/collections/${enc(c.name)}`, class: "cname"}, c.name)},
  {label: "count", class: "num", value: (c) => fmtNum(c.count)},
  {label: "dim", class: "num", value: (c) => c.dim},
  {label: "metric", value: (c) => c.metric},
  {label: "scan / rescore", value: (c) => h("code", {}, c.scan, " / ", c.rescore ?? "none")},
  {label: "bytes/vector", class: "nowrap", title: "code bytes a search touches per vector, against float32",
    value: bytesPerVector},
  {label: "on disk", class: "num", value: (c) => fmtBytes(c.bytes)},
  {label: "segments", class: "num", value: (c) => c.segments},
  {label: "versions", class: "num", value: (c) => `${(c.versions || []).length} (v${c.version})`},
  {label: "est. recall", class: "num", value: estimatedRecall},
  {label: "embedder", value: (c) => c.embedder ?? "–"},
];

export async function collectionsPage(main, session) {
  const {data} = await get("/v1/collections");
  const available = data.collections.filter((c) => c.status !== "unavailable");
  const broken = data.collections.filter((c) => c.status === "unavailable");
  const admin = session.role === "admin";
  const columns = [...COLUMNS, {label: "", value: (c) => h("span", {class: "actions"},
    h("a", {class: "button small", href: `#/search/${enc(c.name)}`}, "Search"),
    admin ? deleteButton(c.name, () => collectionsPage(main, session)) : null)}];
  mount(main,
    h("h1", {}, "Collections"),
    available.length ? table(columns, available, {id: "collections"}) :
      h("p", {class: "muted", id: "collections"}, "No collections yet."),
    broken.length ? [h("h2", {}, "Unavailable"), table([
      {label: "name", value: (c) => c.name}, {label: "error", value: (c) => c.error},
      {label: "message", value: (c) => c.message},
      ...(admin ? [{label: "", value: (c) => deleteButton(c.name, () => collectionsPage(main, session))}] : []),
    ], broken)] : null,
    admin ? createForm(() => collectionsPage(main, session)) : null);
}

function deleteButton(name, done) {
  return h("button", {type: "button", class: "small danger", "data-admin": "delete", onclick: async (e) => {
    if (!confirm(`Delete collection '${name}' and all its data?`)) return;
    e.target.disabled = true;
    try {
      await del(`/v1/collections/${enc(name)}`);
      await done();
    } catch (err) {
      e.target.disabled = false;
      e.target.after(errorBox(err));
    }
  }}, "Delete");
}

function field(label, input, hint) {
  return h("label", {class: "field"}, h("span", {}, label), input, hint ? h("small", {class: "muted"}, hint) : null);
}

function createForm(done) {
  const name = h("input", {name: "name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.-]*", maxlength: 64,
    placeholder: "docs"});
  const embedder = h("select", {name: "embedder"}, h("option", {value: ""}, "none (vectors)"),
    h("option", {value: "minilm"}, "minilm (texts, 384-d)"));
  const dim = h("input", {name: "dim", type: "number", min: 1, max: 65536, placeholder: "384"});
  const metric = h("select", {name: "metric"}, ["cosine", "ip", "l2"].map((m) => h("option", {value: m}, m)));
  const preset = h("select", {name: "preset"}, ["default", "compact", "accurate"].map((p) => h("option", {value: p},
    p)));
  const scan = h("input", {name: "scan", placeholder: "from the preset, e.g. binary"});
  const rescore = h("input", {name: "rescore", placeholder: "from the preset, e.g. e8p"});
  const status = h("div", {class: "status"});
  const form = h("form", {class: "card", id: "create-collection", "data-admin": "create", onsubmit: async (e) => {
    e.preventDefault();
    const body = {name: name.value.trim(), metric: metric.value, preset: preset.value};
    if (embedder.value) body.embedder = embedder.value;
    if (dim.value) body.dim = Number(dim.value);
    if (scan.value.trim()) body.scan = scan.value.trim();
    if (rescore.value.trim()) body.rescore = rescore.value.trim() === "none" ? null : rescore.value.trim();
    mount(status, h("span", {class: "muted"}, "creating…"));
    try {
      await post("/v1/collections", body);
      await done();
    } catch (err) {
      mount(status, errorBox(err));
    }
  }},
  h("h2", {}, "Create a collection"),
  h("div", {class: "fields"}, field("name", name), field("embedder", embedder),
    field("dim", dim, "not needed with an embedder"), field("metric", metric), field("preset", preset),
    field("scan codes", scan), field("rescore codes", rescore, "or 'none'")),
  h("button", {type: "submit"}, "Create"), status);
  return form;
}

// Version history: GET /v1/collections/{name}/versions (newest first); servers without that route fall back
// to the `versions` of the collection's info (oldest first).
async function versions(name, info) {
  try {
    const {data} = await get(`/v1/collections/${enc(name)}/versions`);
    return {current: data.current, versions: data.versions};
  } catch (err) {
    if (err.status !== 404 && err.status !== 405) throw err;
    return {current: info.version, versions: [...(info.versions || [])].reverse()};
  }
}

export async function collectionPage(main, session, name) {
  const {data: c} = await get(`/v1/collections/${enc(name)}`);
  const hist = await versions(name, c);
  const settings = [
    ["count", fmtNum(c.count)], ["dimension", c.dim], ["metric", c.metric], ["scan codes", h("code", {}, c.scan)],
    ["rescore codes", h("code", {}, c.rescore ?? "none")], ["residual", String(c.residual)],
    ["IVF", c.ivf ? h("code", {}, JSON.stringify(c.ivf)) : "flat"], ["bytes per vector", bytesPerVector(c)],
    ["on disk", fmtBytes(c.bytes)], ["segments", c.segments], ["estimated recall", estimatedRecall(c)],
    ["embedder", c.embedder ?? "none"], ["metadata columns", (c.metadata_columns || []).join(", ") || "none"],
    ["trained", String(c.trained)], ["created", fmtTime(c.created)],
  ];
  mount(main,
    h("p", {}, h("a", {href: "#/collections"}, "← Collections")),
    h("h1", {}, c.name, " ", h("a", {class: "button small", href: `#/search/${enc(c.name)}`}, "Search")),
    h("dl", {class: "settings"}, settings.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h2", {}, "Version history"),
    table([
      {label: "version", class: "num", value: (v) => v.version === hist.current ? h("strong", {}, `${v.version} ` +
        "(current)") : v.version},
      {label: "committed", value: (v) => fmtTime(v.timestamp)},
      {label: "rows", class: "num", value: (v) => fmtNum(v.rows)},
    ], hist.versions, {id: "versions"}),
    session.role === "admin" ? h("p", {}, deleteButton(c.name, () => { location.hash = "#/collections"; })) : null);
}
