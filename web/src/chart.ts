// A small line chart drawn as SVG (no library): one or more series over training steps.
const NS = "http://www.w3.org/2000/svg";

export interface Series {
  name: string;
  cls: string;
  points: [number, number][];
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function label(n: number): string {
  if (n === 0) return "0";
  const a = Math.abs(n);
  if (a >= 1000 || a < 0.01) return n.toExponential(1);
  return n.toFixed(a >= 10 ? 0 : a >= 1 ? 2 : 3);
}

/** Draws `series` into `root` (an <svg>), replacing what was there. */
export function drawChart(root: SVGSVGElement, series: Series[], xLabel: string): void {
  // As wide as the chart is drawn (so its labels keep their size on a phone), 640 before it is laid out.
  const shown = Math.round(root.getBoundingClientRect().width);
  const W = shown > 0 ? Math.min(1000, Math.max(280, shown)) : 640;
  const H = W < 500 ? 200 : 260;
  const L = 56;
  const R = 12;
  const T = 12;
  const B = 36;
  root.setAttribute("viewBox", `0 0 ${W} ${H}`);
  root.replaceChildren();
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" });
    t.textContent = "Waiting for the first training step…";
    root.append(t);
    return;
  }
  let x0 = Math.min(...all.map((p) => p[0]));
  let x1 = Math.max(...all.map((p) => p[0]));
  let y0 = Math.min(...all.map((p) => p[1]));
  let y1 = Math.max(...all.map((p) => p[1]));
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) {
    y0 -= 0.5;
    y1 += 0.5;
  }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  root.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot" }));
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    root.append(svg("line", { x1: L, x2: W - R, y1: sy(y), y2: sy(y), class: "grid" }));
    const t = svg("text", { x: L - 6, y: sy(y) + 4, "text-anchor": "end", class: "tick" });
    t.textContent = label(y);
    root.append(t);
  }
  // Steps are whole numbers; one step alone gets one tick.
  const single = Math.min(...all.map((p) => p[0])) === Math.max(...all.map((p) => p[0]));
  const xs = single ? [x0] : [...new Set([x0, Math.round((x0 + x1) / 2), x1])];
  for (const x of xs) {
    const t = svg("text", { x: sx(x), y: H - B + 16, "text-anchor": "middle", class: "tick" });
    t.textContent = String(Math.round(x));
    root.append(t);
  }
  const xl = svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "axis" });
  xl.textContent = xLabel;
  root.append(xl);
  for (const s of series) {
    if (s.points.length === 0) continue;
    // By step: a program may report a step again or out of order (for example its best step at the end).
    const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
    const pts = sorted.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { points: pts, class: `line ${s.cls}` }));
    if (s.points.length <= 40) {
      for (const [x, y] of sorted) root.append(svg("circle", { cx: sx(x), cy: sy(y), r: 2.5, class: `dot ${s.cls}` }));
    }
  }
}
