// The pipeline graph: a layered layout (longest path from the sources, barycentre ordering)
// drawn as SVG, top to bottom, each step with its state and element count.

import { clear, fmtNumber, h, stateName, tone } from "./ui.js";

const W = 232;
const H = 58;
const GAP_X = 28;
const GAP_Y = 42;
const PAD = 20;

export function layout(nodes, edges) {
  const index = new Map(nodes.map((n, i) => [n.id, i]));
  const parents = nodes.map(() => []);
  const children = nodes.map(() => []);
  for (const e of edges) {
    const s = index.get(e.from);
    const t = index.get(e.to);
    if (s === undefined || t === undefined || s === t) continue;
    parents[t].push(s);
    children[s].push(t);
  }
  // Kahn's order; what a cycle leaves behind follows in the given order.
  const indegree = parents.map((p) => p.length);
  const queue = nodes.map((_, i) => i).filter((i) => indegree[i] === 0);
  const order = [];
  const placed = new Set();
  while (queue.length) {
    const i = queue.shift();
    order.push(i);
    placed.add(i);
    for (const c of children[i]) if (--indegree[c] === 0) queue.push(c);
  }
  for (let i = 0; i < nodes.length; i += 1) if (!placed.has(i)) order.push(i);
  const layer = new Array(nodes.length).fill(0);
  for (const i of order) for (const p of parents[i]) if (placed.has(p) || order.indexOf(p) < order.indexOf(i)) layer[i] = Math.max(layer[i], layer[p] + 1);
  const layers = [];
  for (const i of order) (layers[layer[i]] ||= []).push(i);
  const pos = new Array(nodes.length).fill(0);
  const renumber = () => layers.forEach((row) => row.forEach((n, k) => { pos[n] = k; }));
  renumber();
  const centre = (list) => (list.length ? list.reduce((a, b) => a + pos[b], 0) / list.length : null);
  for (let sweep = 0; sweep < 4; sweep += 1) {
    const down = sweep % 2 === 0;
    const rows = down ? layers.slice(1) : layers.slice(0, -1).reverse();
    for (const row of rows) {
      const key = new Map(row.map((n) => [n, centre(down ? parents[n] : children[n]) ?? pos[n]]));
      row.sort((a, b) => key.get(a) - key.get(b));
      row.forEach((n, k) => { pos[n] = k; });
    }
  }
  const widest = Math.max(1, ...layers.map((row) => row.length));
  const width = widest * (W + GAP_X) - GAP_X + 2 * PAD;
  const boxes = new Map();
  layers.forEach((row, depth) => {
    const rowWidth = row.length * (W + GAP_X) - GAP_X;
    const left = (width - rowWidth) / 2;
    row.forEach((n, k) => boxes.set(nodes[n].id, { x: left + k * (W + GAP_X), y: PAD + depth * (H + GAP_Y) }));
  });
  return { boxes, width, height: PAD * 2 + layers.length * (H + GAP_Y) - GAP_Y };
}

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Draws `graph` ({nodes, edges}) into `host`; `onSelect(node)` when a step is clicked. */
export function drawGraph(host, graph, { selected = "", onSelect = () => {}, scale = 1 } = {}) {
  const { nodes, edges } = graph;
  const { boxes, width, height } = layout(nodes, edges);
  const svg = h("svg:svg", {
    class: "graph-svg", viewBox: `0 0 ${width} ${height}`, width: Math.round(width * scale), height: Math.round(height * scale),
    role: "img", "aria-label": `Pipeline graph of ${nodes.length} steps`,
  });
  svg.append(h("svg:defs", {}, h("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    h("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", class: "graph-arrow" }))));
  const edgeLayer = h("svg:g", { class: "graph-edges" });
  for (const e of edges) {
    const a = boxes.get(e.from);
    const b = boxes.get(e.to);
    if (!a || !b) continue;
    const sx = a.x + W / 2;
    const sy = a.y + H;
    const tx = b.x + W / 2;
    const ty = b.y - 2;
    const dy = Math.max(18, (ty - sy) / 2);
    const title = `${e.collection || "collection"}${e.elements !== undefined ? `: ${fmtNumber(e.elements)} elements` : ""}`;
    edgeLayer.append(h("svg:path", { class: "graph-edge", d: `M ${sx} ${sy} C ${sx} ${sy + dy}, ${tx} ${ty - dy}, ${tx} ${ty}`, "marker-end": "url(#arrow)" },
      h("svg:title", {}, title)));
  }
  svg.append(edgeLayer);
  const nodeLayer = h("svg:g", { class: "graph-nodes" });
  for (const node of nodes) {
    const box = boxes.get(node.id);
    const count = node.elementsOut ?? node.elementsIn;
    const state = node.state || "";
    const group = h("svg:g", {
      class: `graph-node tone-${tone(state)}${node.id === selected ? " selected" : ""}${state === "RUNNING" ? " running" : ""}`,
      transform: `translate(${box.x} ${box.y})`, tabindex: 0, role: "button",
      dataset: { step: node.name, state },
    });
    group.append(
      h("svg:title", {}, `${node.name}\n${node.kind || ""}${state ? ` · ${stateName(state)}` : ""}${count !== undefined ? ` · ${fmtNumber(count)} elements` : ""}`),
      h("svg:rect", { class: "graph-box", width: W, height: H, rx: 8, ry: 8 }),
      h("svg:rect", { class: "graph-bar", width: 5, height: H - 2, x: 1, y: 1, rx: 3 }),
      h("svg:text", { class: "graph-name", x: 16, y: 24 }, shorten(node.name, 24)),
      h("svg:text", { class: "graph-kind", x: 16, y: 44 }, shorten(node.kind || "", 16)),
      h("svg:text", { class: "graph-count", x: W - 12, y: 44, "text-anchor": "end" }, count !== undefined ? `${fmtNumber(count)} el.` : ""),
      h("svg:circle", { class: "graph-state", cx: W - 16, cy: 18, r: 5 }),
    );
    const pick = () => onSelect(node);
    group.addEventListener("click", pick);
    group.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); pick(); } });
    nodeLayer.append(group);
  }
  svg.append(nodeLayer);
  clear(host, svg);
  return svg;
}
