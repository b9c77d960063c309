// A tiny element builder: h("a", {href: "#"}, "text", child) — attributes starting with "on" are listeners.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// Replace the contents of `el` with `children`.
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A table from column definitions [{label, value: row => node|string, class}] and rows.
export function table(columns, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {class: c.class, title: c.title}, c.label)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", {class: c.class}, c.value(r)))))));
}

export function errorBox(err) {
  const code = err && err.code ? `${err.code}: ` : "";
  const status = err && err.status ? ` (HTTP ${err.status})` : "";
  return h("div", {class: "error", role: "alert"}, `${code}${err && err.message ? err.message : err}${status}`);
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}

export function fmtNum(x, digits = 2) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (typeof x !== "number") return String(x);
  return Number.isInteger(x) ? x.toLocaleString("en-US") : x.toFixed(digits);
}

export function fmtTime(unixSeconds) {
  if (!unixSeconds) return "–";
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

// Copy text to the clipboard; falls back to selecting a hidden textarea where the Clipboard API is absent.
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const ta = h("textarea", {class: "offscreen"});
    ta.value = text;
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    return ok;
  }
}

// A <pre> with a Copy button.
export function copyBlock(label, text, attrs = {}) {
  const status = h("span", {class: "muted"});
  return h("div", {class: "copy", ...attrs},
    h("div", {class: "copy-head"}, h("strong", {}, label),
      h("button", {type: "button", class: "small", onclick: async () => {
        status.textContent = (await copyText(text)) ? "copied" : "select and copy by hand";
      }}, "Copy"), status),
    h("pre", {}, text));
}
