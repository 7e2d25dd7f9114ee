// Zone and tripwire editor over the live picture. Points are held as fractions of the frame; items keep the
// units they were saved with (px items are converted with the processed frame's size), new ones use "norm".
// Saving PUTs the camera's whole rules document; the server applies it at once.

import { api } from "./api.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const ZONE_COLORS = ["#28a0c8", "#4bb43c", "#c85ab4", "#f08c28"];
const LINE_COLOR = "#ffd700";
const HANDLE_RADIUS = 6;
const CLOSE_DISTANCE_PX = 12;

function el(tag, attrs = {}, parent) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function html(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

export class ZoneEditor {
  // frameSize: () => {width, height} of the frames the rules apply to (for px units).
  constructor({ svg, list, hint, msg, frameSize, onSaved = () => {} }) {
    Object.assign(this, { svg, list, hint, msg, frameSize, onSaved });
    this.cameraId = null;
    this.rules = null;
    this.items = [];
    this.selected = null;
    this.drawing = null; // {kind, pts} while adding a shape
    this.pointer = null; // last pointer position while drawing (fractions)
    this.drag = null; // {item, index} while moving a vertex
    this.dirty = false;
    this.resize = new ResizeObserver(() => this.render());
    svg.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    svg.addEventListener("pointermove", (e) => this.onPointerMove(e));
    svg.addEventListener("pointerup", () => (this.drag = null));
    svg.addEventListener("dblclick", (e) => {
      e.preventDefault();
      this.finishDrawing();
    });
    svg.addEventListener("contextmenu", (e) => this.onContextMenu(e));
    this.onKey = (e) => {
      if (e.target.tagName === "INPUT") return;
      if (e.key === "Enter") this.finishDrawing();
      if (e.key === "Escape") this.cancelDrawing();
    };
  }

  async open(cameraId) {
    this.cameraId = cameraId;
    this.rules = await api(`/api/cameras/${encodeURIComponent(cameraId)}/rules`);
    this.load();
    this.svg.removeAttribute("hidden"); // an SVG element has no .hidden property
    this.resize.observe(this.svg);
    document.addEventListener("keydown", this.onKey);
    this.setHint("Drag a point to move it; right-click a point to remove it.");
    this.render();
  }

  close() {
    this.cancelDrawing();
    this.svg.setAttribute("hidden", "");
    this.resize.disconnect();
    document.removeEventListener("keydown", this.onKey);
    this.hint.hidden = true;
    this.msg.textContent = "";
  }

  load() {
    const { width, height } = this.frameSize();
    const toNorm = (pts, units) => pts.map(([x, y]) => (units === "norm" ? [x, y] : [x / width, y / height]));
    this.items = [
      ...this.rules.zones.map((z) => ({ kind: "zone", cfg: z, name: z.name, pts: toNorm(z.polygon, z.units) })),
      ...this.rules.lines.map((l) => ({ kind: "line", cfg: l, name: l.name, pts: toNorm(l.points, l.units) })),
    ];
    this.selected = null;
    this.dirty = false;
    this.renderList();
  }

  // -- drawing --------------------------------------------------------------------------------
  startDrawing(kind) {
    this.cancelDrawing();
    this.drawing = { kind, pts: [] };
    this.svg.classList.add("drawing");
    this.setHint(
      kind === "zone"
        ? "Click the corners of the zone; click the first point, double-click or press Enter to close it."
        : "Click the points of the tripwire; double-click or press Enter to finish. Esc cancels.",
    );
    this.render();
  }

  cancelDrawing() {
    this.drawing = null;
    this.svg.classList.remove("drawing");
    this.render();
  }

  finishDrawing() {
    const d = this.drawing;
    if (!d) return;
    const needed = d.kind === "zone" ? 3 : 2;
    if (d.pts.length < needed) {
      this.setHint(`A ${d.kind === "zone" ? "zone" : "tripwire"} needs at least ${needed} points.`);
      return;
    }
    const name = this.uniqueName(d.kind);
    const cfg =
      d.kind === "zone"
        ? { name, units: "norm", polygon: [] }
        : { name, units: "norm", points: [], left_to_right: "in", right_to_left: "out" };
    const item = { kind: d.kind, cfg, name, pts: d.pts, isNew: true };
    this.items.push(item);
    this.selected = item;
    this.dirty = true;
    this.drawing = null;
    this.svg.classList.remove("drawing");
    this.setHint(`Added ${name}. Name it, then Save.`);
    this.renderList();
    this.render();
  }

  uniqueName(kind) {
    const taken = new Set(this.items.filter((i) => i.kind === kind).map((i) => i.name));
    for (let n = 1; ; n++) if (!taken.has(`${kind}-${n}`)) return `${kind}-${n}`;
  }

  position(e) {
    const r = this.svg.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return [clamp((e.clientX - r.left) / r.width), clamp((e.clientY - r.top) / r.height)];
  }

  onPointerDown(e) {
    if (e.button !== 0) return;
    const p = this.position(e);
    if (this.drawing) {
      const d = this.drawing;
      const r = this.svg.getBoundingClientRect();
      if (d.kind === "zone" && d.pts.length >= 3) {
        const [x0, y0] = d.pts[0];
        if (Math.hypot((p[0] - x0) * r.width, (p[1] - y0) * r.height) < CLOSE_DISTANCE_PX) {
          this.finishDrawing();
          return;
        }
      }
      if (e.detail > 1) return; // the second click of a double-click finishes instead
      d.pts.push(p);
      this.render();
      return;
    }
    const handle = e.target.closest("[data-vertex]");
    const shape = e.target.closest("[data-item]");
    if (handle) {
      const item = this.items[Number(handle.dataset.item)];
      this.drag = { item, index: Number(handle.dataset.vertex) };
      this.selected = item;
      this.svg.setPointerCapture(e.pointerId);
    } else if (shape) {
      this.selected = this.items[Number(shape.dataset.item)];
    } else {
      this.selected = null;
    }
    this.renderList();
    this.render();
  }

  onPointerMove(e) {
    if (this.drag) {
      this.drag.item.pts[this.drag.index] = this.position(e);
      this.dirty = true;
      this.render();
    } else if (this.drawing) {
      this.pointer = this.position(e);
      this.render();
    }
  }

  onContextMenu(e) {
    const handle = e.target.closest("[data-vertex]");
    if (!handle) return;
    e.preventDefault();
    const item = this.items[Number(handle.dataset.item)];
    if (item.pts.length <= (item.kind === "zone" ? 3 : 2)) {
      this.setHint(`${item.name} cannot lose another point.`);
      return;
    }
    item.pts.splice(Number(handle.dataset.vertex), 1);
    this.dirty = true;
    this.render();
  }

  setHint(text) {
    this.hint.textContent = text;
    this.hint.hidden = false;
  }

  // -- rendering ------------------------------------------------------------------------------
  render() {
    if (this.svg.hasAttribute("hidden")) return;
    const { width: W, height: H } = this.svg.getBoundingClientRect();
    if (!W || !H) return;
    this.svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const px = ([x, y]) => [x * W, y * H];
    const ptsAttr = (pts) => pts.map((p) => px(p).join(",")).join(" ");
    this.svg.replaceChildren();
    let zoneIndex = 0;
    this.items.forEach((item, i) => {
      const selected = item === this.selected;
      const g = el("g", { class: `shape ${item.kind}${selected ? " selected" : ""}`, "data-item": i }, this.svg);
      if (item.kind === "zone") {
        const color = ZONE_COLORS[zoneIndex++ % ZONE_COLORS.length];
        el("polygon", { points: ptsAttr(item.pts), fill: color, "fill-opacity": 0.25, stroke: color }, g);
      } else {
        el("polyline", { points: ptsAttr(item.pts), fill: "none", stroke: LINE_COLOR }, g);
        this.directionLabels(g, item, px);
      }
      const [lx, ly] = px(item.pts[0]);
      el("text", { x: lx + 8, y: ly - 8, class: "shape-name" }, g).textContent = item.name;
      item.pts.forEach((p, v) => {
        const [cx, cy] = px(p);
        el("circle", { cx, cy, r: HANDLE_RADIUS, class: "handle", "data-item": i, "data-vertex": v }, g);
      });
    });
    const d = this.drawing;
    if (d && d.pts.length) {
      const pts = this.pointer ? [...d.pts, this.pointer] : d.pts;
      const tag = d.kind === "zone" ? "polygon" : "polyline";
      el(tag, { points: ptsAttr(pts), class: "rubber", fill: d.kind === "zone" ? "rgba(255,255,255,0.12)" : "none" },
        this.svg);
      d.pts.forEach((p) => {
        const [cx, cy] = px(p);
        el("circle", { cx, cy, r: HANDLE_RADIUS - 1, class: "handle drawing-point" }, this.svg);
      });
    }
  }

  // Walking from the first point to the last, left_to_right crosses towards the right-hand side. Drawn a quarter
  // along the first segment: the live picture shows the saved line's counts at its middle.
  directionLabels(g, item, px) {
    const [ax, ay] = px(item.pts[0]);
    const [bx, by] = px(item.pts[1]);
    const len = Math.hypot(bx - ax, by - ay) || 1;
    const [rx, ry] = [-(by - ay) / len, (bx - ax) / len];
    const [mx, my] = [ax + (bx - ax) / 4, ay + (by - ay) / 4];
    for (const [sign, name] of [
      [1, item.cfg.left_to_right],
      [-1, item.cfg.right_to_left],
    ]) {
      const [tx, ty] = [mx + sign * rx * 26, my + sign * ry * 26];
      el("line", { x1: mx, y1: my, x2: tx, y2: ty, class: "direction" }, g);
      el("text", { x: tx + sign * rx * 6, y: ty + sign * ry * 6 + 4, class: "direction-name" }, g).textContent = name;
    }
  }

  renderList() {
    this.list.replaceChildren(
      ...this.items.map((item) => {
        const name = html("input", { value: item.name, className: "name", title: "Name", spellcheck: false });
        name.addEventListener("input", () => {
          item.name = name.value.trim();
          name.classList.toggle("invalid", !NAME_PATTERN.test(item.name));
          this.dirty = true;
          this.render();
        });
        const remove = html("button", { type: "button", className: "ghost small", textContent: "Remove" });
        remove.addEventListener("click", () => {
          this.items.splice(this.items.indexOf(item), 1);
          this.dirty = true;
          this.renderList();
          this.render();
        });
        const row = [html("span", { className: `kind ${item.kind}`, textContent: item.kind === "zone" ? "Zone" : "Line" }),
          name, remove];
        const li = html("li", { className: item === this.selected ? "selected" : "" }, row);
        if (item.kind === "line") li.append(this.directionInputs(item));
        li.addEventListener("click", (e) => {
          if (e.target.tagName === "INPUT" || e.target.tagName === "BUTTON") return;
          this.selected = item;
          this.renderList();
          this.render();
        });
        return li;
      }),
    );
    if (!this.items.length) {
      this.list.append(html("li", { className: "none", textContent: "No zones or tripwires yet." }));
    }
  }

  directionInputs(item) {
    const input = (key, title) => {
      const field = html("input", { value: item.cfg[key], className: "direction", title, spellcheck: false });
      field.addEventListener("input", () => {
        item.cfg = { ...item.cfg, [key]: field.value.trim() };
        field.classList.toggle("invalid", !NAME_PATTERN.test(field.value.trim()));
        this.dirty = true;
        this.render();
      });
      return field;
    };
    const swap = html("button", { type: "button", className: "ghost small", textContent: "Swap", title: "Swap directions" });
    swap.addEventListener("click", () => {
      item.cfg = { ...item.cfg, left_to_right: item.cfg.right_to_left, right_to_left: item.cfg.left_to_right };
      this.dirty = true;
      this.renderList();
      this.render();
    });
    return html("div", { className: "directions" }, [
      input("left_to_right", "Crossing to the right-hand side (walking from the first point)"),
      input("right_to_left", "Crossing to the left-hand side"),
      swap,
    ]);
  }

  // -- saving ---------------------------------------------------------------------------------
  rulesToSave() {
    const { width, height } = this.frameSize();
    const fromNorm = (pts, units) =>
      pts.map(([x, y]) =>
        units === "norm"
          ? [Math.round(x * 1e4) / 1e4, Math.round(y * 1e4) / 1e4]
          : [Math.round(x * width * 10) / 10, Math.round(y * height * 10) / 10],
      );
    const zones = [];
    const lines = [];
    for (const item of this.items) {
      const units = item.cfg.units || "norm";
      if (item.kind === "zone") zones.push({ ...item.cfg, name: item.name, polygon: fromNorm(item.pts, units) });
      else lines.push({ ...item.cfg, name: item.name, points: fromNorm(item.pts, units) });
    }
    return { ...this.rules, zones, lines };
  }

  async save() {
    this.cancelDrawing();
    this.msg.className = "msg";
    this.msg.textContent = "Saving…";
    try {
      this.rules = await api(`/api/cameras/${encodeURIComponent(this.cameraId)}/rules`, {
        method: "PUT",
        body: this.rulesToSave(),
      });
    } catch (err) {
      this.msg.className = "msg error";
      this.msg.textContent = err.message;
      return false;
    }
    this.load();
    this.render();
    this.msg.textContent = "Saved: in effect now.";
    this.onSaved();
    return true;
  }

  discard() {
    this.load();
    this.render();
    this.msg.className = "msg";
    this.msg.textContent = "Changes discarded.";
  }
}
