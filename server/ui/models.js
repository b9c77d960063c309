// Compressed models (served from --models-dir): the list, and per model its tensors, a chart of the bits
// allocated per layer, a chart of SQNR against bits, and the download links of the /v1/models API.
import {download, enc, get} from "./api.js";
import {barChart, colours, scatter} from "./chart.js";
import {errorBox, fmtBytes, fmtNum, h, mount, table} from "./dom.js";

// "e8:bits=2.5,rht=true" → "e8"; used to colour charts by format family.
export const family = (format) => String(format || "?").split(":")[0];

// The outlier setting of a format spec ("…,outliers=0.005" → "0.005"), or "–" where it has none.
const outliers = (format) => (String(format || "").match(/(?:^|[:,])outliers=([^,]+)/) || [])[1] ?? "–";

// Layer of a tensor name: "encoder.layer.3.attention.self.query.weight" → "layer 3"; otherwise its first part.
export function layerOf(name) {
  const m = name.match(/(?:^|\.)(?:layers?|h|blocks?)\.(\d+)(?:\.|$)/);
  return m ? `layer ${m[1]}` : name.split(".")[0];
}

const numel = (shape) => shape.reduce((a, b) => a * b, 1);

// Bits per parameter per layer (weighted by parameters), in the order layers first appear.
export function bitsPerLayer(tensors) {
  const groups = new Map();
  for (const t of tensors) {
    const key = layerOf(t.name);
    const g = groups.get(key) || {label: key, bits: 0, params: 0, formats: new Map()};
    const n = numel(t.shape);
    g.bits += t.bits;
    g.params += n;
    g.formats.set(family(t.format), (g.formats.get(family(t.format)) || 0) + n);
    groups.set(key, g);
  }
  return [...groups.values()].map((g) => {
    const main = [...g.formats.entries()].sort((a, b) => b[1] - a[1])[0][0];
    const value = g.params ? g.bits / g.params : 0;
    return {label: g.label, value, category: main,
      tip: `${g.label}: ${value.toFixed(3)} bits/param over ${g.params.toLocaleString("en-US")} params ` +
        `(${[...g.formats.keys()].join(", ")})`};
  });
}

function downloadLink(url, filename, label) {
  return h("a", {href: url, class: "download", download: filename, onclick: async (e) => {
    e.preventDefault();
    try {
      await download(url, filename);
    } catch (err) {
      e.target.after(errorBox(err));
    }
  }}, label);
}

export async function modelsPage(main) {
  const {data} = await get("/v1/models");
  mount(main, h("h1", {}, "Compressed models"),
    data.models.length ? table([
      {label: "model", value: (m) => h("a", {href: `#/models/${enc(m.name)}`, class: "mname"}, m.name)},
      {label: "tensors", class: "num", value: (m) => fmtNum(m.tensors)},
      {label: "parameters", class: "num", value: (m) => fmtNum(m.params)},
      {label: "bits/param", class: "num", value: (m) => m.bits_per_param.toFixed(3)},
      {label: "vs float32", class: "num", value: (m) => `${(32 / m.bits_per_param).toFixed(1)}× smaller`},
      {label: "on disk", class: "num", value: (m) => fmtBytes(m.bytes)},
      {label: "shards", value: (m) => m.shards.map((s) => [downloadLink(s.url, s.file.split("/").pop(),
        s.file.split("/").pop()), " "])},
    ], data.models, {id: "models"}) : h("p", {class: "muted", id: "models"},
      "No compressed models: start the server with --models-dir DIR, a folder of `vqsearch compress` outputs."));
}

export async function modelPage(main, session, name) {
  const {data: m} = await get(`/v1/models/${enc(name)}`);
  const base = `/v1/models/${enc(name)}`;
  const tensors = m.tensors;
  const tot = m.totals;
  const palette = colours(tensors.map((t) => family(t.format)));  // one colour per format family in both charts
  const group = h("select", {id: "bits-group"}, h("option", {value: "layer"}, "per layer"),
    h("option", {value: "tensor"}, "per tensor"));
  const bitsChart = h("div", {id: "bits-chart", class: "chart-box"});
  const drawBits = () => {
    const bars = group.value === "layer" ? bitsPerLayer(tensors) : tensors.map((t) => ({label: t.name,
      value: t.bits_per_param, category: family(t.format), tip: `${t.name}: ${t.bits_per_param.toFixed(3)} ` +
        `bits/param (${t.format})`}));
    mount(bitsChart, barChart(bars, {title: "Bits per parameter", yLabel: "bits / parameter", palette}));
  };
  group.addEventListener("change", drawBits);
  drawBits();
  const points = tensors.filter((t) => Number.isFinite(t.sqnr_db)).map((t) => ({x: t.bits_per_param, y: t.sqnr_db,
    category: family(t.format), tip: `${t.name}: ${t.bits_per_param.toFixed(3)} bits/param, ` +
      `SQNR ${t.sqnr_db.toFixed(2)} dB (${t.format})`}));
  const nameFilter = h("input", {type: "search", id: "tensor-filter", placeholder: "filter tensors by name"});
  const tableBox = h("div", {});
  const stat = (t, key) => (t.stats && typeof t.stats[key] === "number" ? t.stats[key].toFixed(2) : "–");
  const drawTable = () => {
    const needle = nameFilter.value.trim().toLowerCase();
    mount(tableBox, table([
      {label: "tensor", value: (t) => h("code", {}, t.name)},
      {label: "shape", value: (t) => `[${t.shape.join(", ")}]`},
      {label: "format", value: (t) => h("code", {}, t.format)},
      {label: "bits/param", class: "num", value: (t) => t.bits_per_param.toFixed(3)},
      {label: "SQNR dB", class: "num", value: (t) => (Number.isFinite(t.sqnr_db) ? t.sqnr_db.toFixed(2) : "–")},
      {label: "kurtosis", class: "num", value: (t) => stat(t, "kurtosis")},
      {label: "max/RMS", class: "num", value: (t) => stat(t, "max_over_rms")},
      {label: "outliers", class: "num", value: (t) => outliers(t.format)},
      {label: "download", value: (t) => {
        const url = `${base}/tensors/${t.name.split("/").map(enc).join("/")}`;
        const file = t.name.replace(/[^A-Za-z0-9._-]/g, "_");
        return [downloadLink(`${url}?encoding=float32`, `${file}.npy`, "npy"), " ",
          downloadLink(`${url}?encoding=float16&container=safetensors`, `${file}.safetensors`, "f16"), " ",
          downloadLink(`${url}?encoding=codes`, `${file}.arrows`, "codes")];
      }},
    ], tensors.filter((t) => !needle || t.name.toLowerCase().includes(needle)), {id: "tensors"}));
  };
  nameFilter.addEventListener("input", drawTable);
  drawTable();
  const alloc = m.allocation;
  mount(main,
    h("p", {}, h("a", {href: "#/models"}, "← Models")),
    h("h1", {}, name),
    h("dl", {class: "settings"},
      h("dt", {}, "parameters"), h("dd", {}, fmtNum(tot.params)),
      h("dt", {}, "bits/param"), h("dd", {}, `${tot.bits_per_param.toFixed(3)} (${(32 / tot.bits_per_param).toFixed(1)}× ` +
        "smaller than float32)"),
      h("dt", {}, "on disk"), h("dd", {}, fmtBytes(tot.bytes_on_disk)),
      h("dt", {}, "tensors"), h("dd", {}, tensors.length),
      alloc ? [h("dt", {}, "allocation"), h("dd", {}, `${alloc.mode ?? ""} to ${alloc.target_bits ?? "?"} bits/param`)]
        : null,
      h("dt", {}, "created by"), h("dd", {}, m.created_by ?? "–")),
    h("h2", {}, "Bits allocated ", group), bitsChart,
    h("h2", {}, "SQNR against bits"),
    h("div", {id: "sqnr-chart", class: "chart-box"}, points.length ? scatter(points, {title: "SQNR against bits",
      xLabel: "bits / parameter", yLabel: "SQNR (dB)", palette}) : h("p", {class: "muted"}, "No SQNR recorded.")),
    h("h2", {}, "Downloads"),
    h("ul", {id: "downloads"},
      h("li", {}, downloadLink(base, `${name}-manifest.json`, "manifest.json")),
      m.shards.map((s) => h("li", {}, downloadLink(`${base}/${s.file}`, s.file.split("/").pop(), s.file),
        ` (${fmtBytes(s.bytes)})`)),
      (m.files || []).map((f) => h("li", {}, downloadLink(`${base}/${f.path}`, f.path.split("/").pop(), f.path),
        ` (${fmtBytes(f.bytes)})`))),
    h("p", {class: "muted"}, "Load it remotely: ", h("code", {},
      `vqsearch.weights.load("${location.origin}${base}"${session.auth ? ", api_key=..." : ""})`)),
    h("h2", {}, "Tensors ", nameFilter), tableBox);
}
