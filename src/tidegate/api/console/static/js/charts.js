// A small line chart in SVG: time on x, one series on y, gridlines and the latest value.

import { clear, h } from "./ui.js";

const HEIGHT = 190;
const M = { top: 14, right: 16, bottom: 26, left: 56 };

function nice(max) {
  if (max <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * exp >= max) return step * exp;
  return 10 * exp;
}

function short(n) {
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (abs >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return Number.isInteger(n) ? String(n) : n.toFixed(n < 10 ? 2 : 1);
}

const clock = (t) => new Date(t).toTimeString().slice(0, 8);

/** Draws `points` ([{t: ms, v: number}]) into `host`, titled `title`, values in `unit`. */
export function lineChart(host, points, { title, unit = "", emptyText = "No samples yet" }) {
  const WIDTH = Math.max(300, Math.round(host.clientWidth - 28) || 560);
  const last = points.length ? points[points.length - 1].v : null;
  const head = h("div", { class: "chart-head" },
    h("span", { class: "chart-title" }, title),
    h("span", { class: "chart-value", dataset: { value: last ?? "" } }, last === null ? "—" : `${short(last)} ${unit}`));
  const peak = points.length ? Math.max(...points.map((p) => p.v)) : "";
  const svg = h("svg:svg", {
    class: "chart-svg", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT, role: "img", "aria-label": title,
    "data-points": points.length, "data-max": peak,
  });
  const iw = WIDTH - M.left - M.right;
  const ih = HEIGHT - M.top - M.bottom;
  const top = nice(Math.max(0, ...points.map((p) => p.v)));
  const t0 = points.length ? points[0].t : 0;
  const t1 = points.length > 1 ? points[points.length - 1].t : t0 + 1;
  const x = (t) => M.left + ((t - t0) / Math.max(1, t1 - t0)) * iw;
  const y = (v) => M.top + ih - (v / top) * ih;
  for (let k = 0; k <= 4; k += 1) {
    const v = (top * k) / 4;
    svg.append(
      h("svg:line", { class: "chart-grid", x1: M.left, x2: M.left + iw, y1: y(v), y2: y(v) }),
      h("svg:text", { class: "chart-tick", x: M.left - 8, y: y(v) + 4, "text-anchor": "end" }, short(v)));
  }
  if (points.length) {
    svg.append(
      h("svg:text", { class: "chart-tick", x: M.left, y: HEIGHT - 6 }, clock(t0)),
      h("svg:text", { class: "chart-tick", x: M.left + iw, y: HEIGHT - 6, "text-anchor": "end" }, clock(t1)));
  }
  if (points.length > 1) {
    const line = points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
    const area = `${M.left},${M.top + ih} ${line} ${x(t1).toFixed(1)},${M.top + ih}`;
    svg.append(h("svg:polygon", { class: "chart-area", points: area }), h("svg:polyline", { class: "chart-line", points: line }));
  } else {
    svg.append(h("svg:text", { class: "chart-empty", x: M.left + iw / 2, y: M.top + ih / 2, "text-anchor": "middle" }, emptyText));
  }
  clear(host, head, svg);
}
