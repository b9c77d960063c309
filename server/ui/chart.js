// Hand-written SVG charts (no library): a bar chart and a scatter plot with linear axes and tooltips.
const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c !== undefined && c !== null) el.append(c instanceof Node ? c : String(c));
  return el;
}

// "Nice" tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^k).
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((st) => raw <= st);
  const out = [];
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);  // the last tick is at or above `hi`: nothing is drawn off the axis
  for (let i = first; i <= last; i++) out.push(+(i * step).toFixed(10));
  return out;
}

const PALETTE = ["#3b6fb6", "#d9822b", "#3a9a5b", "#b5485d", "#7a5cb0", "#8c6d46", "#2b9bb0", "#777"];

// A legend colour per category, stable in order of first appearance.
export function colours(categories) {
  const map = new Map();
  for (const c of categories) if (!map.has(c)) map.set(c, PALETTE[map.size % PALETTE.length]);
  return map;
}

// The colours of the categories present, from `palette` when given.
function legendOf(palette, categories) {
  if (!palette) return colours(categories);
  const present = new Set(categories);
  return new Map([...palette].filter(([c]) => present.has(c)));
}

function frame(width, height, m, xLabel, yLabel, title) {
  const svg = s("svg", {viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", class: "chart",
    "aria-label": title, preserveAspectRatio: "xMidYMid meet"});
  svg.append(s("title", {}, title));
  svg.append(s("text", {x: m.left + (width - m.left - m.right) / 2, y: height - 4, "text-anchor": "middle",
    class: "axis-label"}, xLabel));
  svg.append(s("text", {x: 12, y: m.top + (height - m.top - m.bottom) / 2, "text-anchor": "middle",
    class: "axis-label", transform: `rotate(-90 12 ${m.top + (height - m.top - m.bottom) / 2})`}, yLabel));
  return svg;
}

function yAxis(svg, yt, y, m, width) {
  for (const t of yt) {
    svg.append(s("line", {x1: m.left, x2: width - m.right, y1: y(t), y2: y(t), class: "grid"}));
    svg.append(s("text", {x: m.left - 6, y: y(t) + 4, "text-anchor": "end", class: "tick"}, fmtTick(t)));
  }
}

function fmtTick(t) {
  return Math.abs(t) >= 1000 ? t.toLocaleString("en-US") : String(+t.toPrecision(4));
}

function legend(svg, map, x, y) {
  let dx = 0;
  for (const [name, colour] of map) {
    svg.append(s("rect", {x: x + dx, y: y - 9, width: 10, height: 10, fill: colour}));
    svg.append(s("text", {x: x + dx + 14, y, class: "tick"}, name));
    dx += 24 + name.length * 6.5;
  }
}

// bars: [{label, value, category, tip}] → an <svg> with one <rect class="bar"> per bar.
// `palette` (a Map category → colour from `colours`) keeps colours equal across charts.
export function barChart(bars, {title = "", yLabel = "", xLabel = "", width = 760, height = 300, palette} = {}) {
  const m = {top: 28, right: 12, bottom: 96, left: 64};
  const svg = frame(width, height, m, xLabel, yLabel, title);
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const maxV = Math.max(1e-9, ...bars.map((b) => b.value));
  const yt = ticks(0, maxV);
  const top = yt[yt.length - 1];
  const y = (v) => m.top + plotH - (v / top) * plotH;
  yAxis(svg, yt, y, m, width);
  const band = plotW / Math.max(1, bars.length);
  const map = legendOf(palette, bars.map((b) => b.category));
  bars.forEach((b, i) => {
    const x = m.left + i * band + band * 0.12;
    const rect = s("rect", {x, y: y(b.value), width: Math.max(1, band * 0.76), height: Math.max(0, y(0) - y(b.value)),
      fill: map.get(b.category), class: "bar"}, s("title", {}, b.tip || `${b.label}: ${b.value}`));
    svg.append(rect);
    if (bars.length <= 60) {
      const lx = x + band * 0.38;
      svg.append(s("text", {x: lx, y: y(0) + 10, "text-anchor": "end", class: "tick",
        transform: `rotate(-45 ${lx} ${y(0) + 10})`}, b.label.length > 18 ? `…${b.label.slice(-17)}` : b.label));
    }
  });
  svg.append(s("line", {x1: m.left, x2: width - m.right, y1: y(0), y2: y(0), class: "axis"}));
  if (map.size > 1 || (map.size === 1 && [...map.keys()][0])) legend(svg, map, m.left, 14);
  return svg;
}

// points: [{x, y, category, tip}] → an <svg> with one <circle class="point"> per point.
export function scatter(points, {title = "", xLabel = "", yLabel = "", width = 760, height = 300, palette} = {}) {
  const m = {top: 28, right: 16, bottom: 44, left: 56};
  const svg = frame(width, height, m, xLabel, yLabel, title);
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const xt = ticks(Math.min(0, ...xs), Math.max(1, ...xs));
  const yt = ticks(Math.min(0, ...ys), Math.max(1, ...ys));
  const [x0, x1, y0, y1] = [xt[0], xt[xt.length - 1], yt[0], yt[yt.length - 1]];
  const x = (v) => m.left + ((v - x0) / (x1 - x0)) * plotW;
  const y = (v) => m.top + plotH - ((v - y0) / (y1 - y0)) * plotH;
  yAxis(svg, yt, y, m, width);
  for (const t of xt) {
    svg.append(s("line", {x1: x(t), x2: x(t), y1: m.top, y2: m.top + plotH, class: "grid"}));
    svg.append(s("text", {x: x(t), y: m.top + plotH + 14, "text-anchor": "middle", class: "tick"}, fmtTick(t)));
  }
  const map = legendOf(palette, points.map((p) => p.category));
  for (const p of points) {
    svg.append(s("circle", {cx: x(p.x), cy: y(p.y), r: 4.5, fill: map.get(p.category), class: "point"},
      s("title", {}, p.tip || `${p.x}, ${p.y}`)));
  }
  if (map.size) legend(svg, map, m.left, 14);
  return svg;
}
