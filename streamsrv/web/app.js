// The streamsrv dashboard: a grid of live cameras, a large view per camera with health, counts and the zone
// editor, and the live event feed. Plain ES modules against the REST API; no build step.

import { ApiError, api, apiKey, setApiKey, tokenUrl } from "./api.js";
import { capacityRows, renderCapacity } from "./capacity.js";
import { ZoneEditor } from "./editor.js";
import { Player } from "./player.js";

const POLL_MS = 2000;
const HEALTH_POLL_MS = 5000;
const FEED_MAX = 100;
const FEED_BACKLOG_S = 600;
const THUMB_ZOOM = 3; // event thumbnails show a third of the frame's width around the object
const THUMB_ASPECT = 72 / 48; // width / height of a thumbnail (style.css .thumb)

const $ = (id) => document.getElementById(id);
const state = {
  settings: { fps: 10, ice_servers: [] },
  cameras: new Map(), // id -> camera object from GET /api/cameras
  stats: new Map(), // id -> GET /api/cameras/{id}/stats
  capacity: null, // GET /api/capacity
  players: new Map(), // id -> Player in the grid
  detail: null, // {id, player} in the large view
  editor: null,
  ready: false, // settings loaded (with the API key, if one is needed)
  transport: "auto",
  layers: [], // optional preview layers: ["motion"] while the "Motion" box is ticked
  feed: null,
};

// -- small helpers -------------------------------------------------------------------------------
function html(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function toast(text, kind = "") {
  const t = $("toast");
  t.textContent = text;
  t.className = `toast ${kind}`;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 4000);
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

function cameraName(id) {
  return state.cameras.get(id)?.name || id;
}

// The size of the frames the pipeline processes (and rules in px refer to): the source, downscaled to fit the
// camera's max_width x max_height the way the decoder does it.
function frameSize(id) {
  const cam = state.cameras.get(id);
  const s = state.stats.get(id);
  if (!s || !s.width) return { width: 0, height: 0 };
  const scale = Math.min(1, cam.max_width / s.width, cam.max_height / s.height);
  if (scale >= 1) return { width: s.width, height: s.height };
  const even = (v) => Math.max(2, Math.floor(Math.floor(v) / 2) * 2);
  return { width: even(s.width * scale), height: even(s.height * scale) };
}

function badge(node, id) {
  const cam = state.cameras.get(id);
  const s = state.stats.get(id);
  const status = cam && !cam.enabled ? "disabled" : s?.state || cam?.state || "starting";
  node.className = `badge ${status}`;
  const text = status === "online" ? `online · ${(s?.processed_fps ?? 0).toFixed(1)} fps` : status;
  // cluster mode: which node runs it (an unassigned camera says why in its title)
  node.textContent = cam?.node ? `${text} · ${cam.node}` : text;
  node.title = s?.error || cam?.error || "";
}

// -- grid ----------------------------------------------------------------------------------------
function renderGrid() {
  const grid = $("grid");
  const ids = [...state.cameras.keys()];
  $("grid-empty").hidden = ids.length > 0;
  for (const tile of [...grid.children]) {
    if (!state.cameras.has(tile.dataset.camera)) {
      state.players.get(tile.dataset.camera)?.stop();
      state.players.delete(tile.dataset.camera);
      tile.remove();
    }
  }
  for (const id of ids) {
    let tile = grid.querySelector(`[data-camera="${CSS.escape(id)}"]`);
    if (!tile) {
      const media = html("div", { className: "player tile-media" });
      tile = html("article", { className: "tile", tabIndex: 0 }, [
        media,
        html("footer", {}, [
          html("span", { className: "tile-name" }),
          html("span", { className: "mode" }),
          html("span", { className: "badge" }),
        ]),
      ]);
      tile.dataset.camera = id;
      tile.addEventListener("click", () => (location.hash = `#/camera/${encodeURIComponent(id)}`));
      tile.addEventListener("keydown", (e) => e.key === "Enter" && tile.click());
      grid.append(tile);
    }
    tile.querySelector(".tile-name").textContent = cameraName(id);
    badge(tile.querySelector(".badge"), id);
    const media = tile.querySelector(".tile-media");
    if (!state.cameras.get(id).enabled) {
      state.players.get(id)?.stop();
      state.players.delete(id);
      media.replaceChildren(html("p", { className: "no-video", textContent: "Camera disabled" }));
    } else if (media.querySelector(".no-video")) {
      media.replaceChildren();
    }
  }
}

function startGridPlayers() {
  for (const tile of $("grid").children) {
    const id = tile.dataset.camera;
    if (state.players.has(id) || !state.cameras.get(id)?.enabled) continue;
    const mode = tile.querySelector(".mode");
    const player = new Player(id, tile.querySelector(".tile-media"), {
      transport: state.transport,
      layers: state.layers,
      iceServers: state.settings.ice_servers,
      onMode: (m, why) => showMode(mode, m, why),
    });
    state.players.set(id, player);
    player.start();
  }
}

function stopGridPlayers() {
  for (const player of state.players.values()) player.stop();
  state.players.clear();
}

function showMode(node, mode, why) {
  node.textContent = { webrtc: "WebRTC", mjpeg: "MJPEG", error: "no video" }[mode];
  node.className = `mode ${mode}`;
  node.title = why ? `WebRTC unavailable: ${why}` : "";
}

// -- large view ----------------------------------------------------------------------------------
function openDetail(id) {
  if (!state.cameras.has(id)) {
    location.hash = "";
    return;
  }
  closeDetail();
  stopGridPlayers(); // a hidden grid would keep the server annotating and encoding for nobody
  $("grid-view").hidden = true;
  $("detail-view").hidden = false;
  $("detail-name").textContent = cameraName(id);
  const player = new Player(id, $("detail-player"), {
    transport: state.transport,
    layers: state.layers,
    iceServers: state.settings.ice_servers,
    onMode: () => {},
  });
  state.detail = { id, player };
  player.start();
  fitStage();
  refreshDetail();
}

function closeDetail() {
  if (!state.detail) return;
  if (state.editor.cameraId) toggleEditor(false);
  state.detail.player.stop();
  state.detail = null;
}

function showGrid() {
  closeDetail();
  $("detail-view").hidden = true;
  $("grid-view").hidden = false;
  startGridPlayers();
}

// The stage takes the frame's aspect ratio, so the picture fills it exactly and editor coordinates match.
function fitStage() {
  if (!state.detail) return;
  const { width, height } = frameSize(state.detail.id);
  if (width && height) $("stage").style.aspectRatio = `${width} / ${height}`;
}

async function refreshDetail() {
  const d = state.detail;
  if (!d) return;
  badge($("detail-badge"), d.id);
  const s = state.stats.get(d.id);
  if (s) {
    const rows = [
      ["State", s.state],
      ["Processed", `${s.processed_fps.toFixed(1)} fps`],
      ["Decoded", `${s.decoded_fps.toFixed(1)} fps`],
      ["Frame age p50 / p95", `${Math.round(s.frame_age_ms_p50)} / ${Math.round(s.frame_age_ms_p95)} ms`],
      ["Resolution", s.width ? `${s.width}×${s.height} ${s.codec}` : "–"],
      ["Dropped (stale)", `${s.dropped_stale}`],
      ["Reconnects", `${s.reconnects}`],
      ...capacityRows(s, state.capacity),
    ];
    if (s.error) rows.push(["Last error", s.error]);
    $("detail-stats").replaceChildren(...rows.flatMap(([k, v]) => [html("dt", { textContent: k }), html("dd", { textContent: v })]));
  }
  try {
    renderCounts(await api(`/api/cameras/${encodeURIComponent(d.id)}/counts`));
  } catch (err) {
    $("detail-counts").textContent = err.message;
  }
}

function renderCounts(counts) {
  const rows = [];
  for (const [zone, byLabel] of Object.entries(counts.occupancy)) {
    const total = Object.values(byLabel).reduce((a, b) => a + b, 0);
    rows.push(html("div", { className: "count zone" }, [html("span", { textContent: zone }), html("b", { textContent: total })]));
  }
  for (const [line, byDir] of Object.entries(counts.lines)) {
    const parts = Object.entries(byDir).map(([dir, byLabel]) => `${dir} ${Object.values(byLabel).reduce((a, b) => a + b, 0)}`);
    rows.push(html("div", { className: "count line" }, [html("span", { textContent: line }), html("b", { textContent: parts.join(" · ") })]));
  }
  $("detail-counts").replaceChildren(...(rows.length ? rows : [html("p", { className: "none", textContent: "No zones or tripwires." })]));
}

async function toggleEditor(on = !state.editor.cameraId) {
  const panel = $("editor-panel");
  if (on) {
    if (!frameSize(state.detail.id).width) {
      toast("The camera has no picture yet: zones are drawn on it.", "error");
      return;
    }
    try {
      await state.editor.open(state.detail.id);
    } catch (err) {
      toast(`Cannot load rules: ${err.message}`, "error");
      return;
    }
    panel.hidden = false;
    $("edit-toggle").textContent = "Done editing";
  } else {
    state.editor.close();
    state.editor.cameraId = null;
    panel.hidden = true;
    $("edit-toggle").textContent = "Edit zones";
  }
}

// -- events --------------------------------------------------------------------------------------
function describeEvent(e) {
  switch (e.type) {
    case "line.cross":
      return `${e.line} · ${e.direction}`;
    case "zone.enter":
      return `entered ${e.zone}`;
    case "zone.exit":
      return `left ${e.zone} after ${e.dwell_s.toFixed(1)} s`;
    case "loiter.start":
      return `loitering in ${e.zone} (${e.dwell_s.toFixed(0)} s)`;
    case "loiter.end":
      return `stopped loitering in ${e.zone} (${e.dwell_s.toFixed(0)} s)`;
    default:
      return "";
  }
}

// A thumbnail of the event's snapshot, zoomed in on the object's box when the frame size is known.
function thumbnail(e) {
  const box = html("div", { className: "thumb" });
  if (!e.bbox) return box;
  const img = html("img", { loading: "lazy", alt: "", src: tokenUrl(`/api/events/${e.id}/snapshot.jpg`) });
  img.addEventListener("error", () => img.remove()); // expired or evicted
  const { width, height } = frameSize(e.camera_id);
  if (width) {
    const zoom = THUMB_ZOOM;
    const [x1, y1, x2, y2] = e.bbox;
    const cx = (x1 + x2) / 2 / width;
    const cy = (y1 + y2) / 2 / height;
    // The image is `zoom` thumbnail widths wide and imgH thumbnail heights tall (CSS percentages of left and
    // top refer to the container's width and height); shift it so the box centre sits in the middle, no gaps.
    const imgH = (zoom * THUMB_ASPECT * height) / width;
    const left = Math.min(0, Math.max(1 - zoom, 0.5 - cx * zoom));
    const top = Math.min(0, Math.max(1 - imgH, 0.5 - cy * imgH));
    Object.assign(img.style, { width: `${zoom * 100}%`, left: `${left * 100}%`, top: `${top * 100}%` });
    img.classList.add("zoomed");
  }
  box.append(img);
  return box;
}

// A clip.ready event gives its event's list item a button that plays the clip inline (range requests let it seek).
function attachClip(e) {
  const item = $("feed").querySelector(`li[data-event-id="${e.event_id}"]`);
  if (!item || e.clip.state !== "ready" || item.querySelector(".clip-toggle")) return;
  const button = html("button", { className: "clip-toggle", type: "button", textContent: "▶ clip" });
  button.addEventListener("click", (ev) => {
    ev.stopPropagation();
    const shown = item.querySelector("video.clip");
    if (shown) return shown.remove();
    const video = html("video", { className: "clip", controls: true, autoplay: true, muted: true });
    video.src = tokenUrl(e.clip.url);
    video.addEventListener("click", (v) => v.stopPropagation());
    item.querySelector(".event-text").append(video);
  });
  item.querySelector(".event-text").append(button);
}

function addEvent(e) {
  if (e.type === "clip.ready") return attachClip(e);
  const thumb = thumbnail(e);
  const who = e.track_id != null ? ` · #${e.track_id} ${e.label}` : "";
  const item = html("li", { className: `event ${e.type.replace(".", "-")}` }, [
    thumb,
    html("div", { className: "event-text" }, [
      html("div", { className: "event-title" }, [
        html("span", { className: "event-type", textContent: e.type }),
        html("span", { textContent: ` ${describeEvent(e)}` }),
      ]),
      html("div", { className: "event-meta", textContent: `${cameraName(e.camera_id)} · ${clock(e.ts)}${who}` }),
    ]),
  ]);
  item.dataset.type = e.type;
  item.dataset.camera = e.camera_id;
  item.dataset.eventId = e.id;
  item.addEventListener("click", () => (location.hash = `#/camera/${encodeURIComponent(e.camera_id)}`));
  const feed = $("feed");
  feed.prepend(item);
  while (feed.children.length > FEED_MAX) feed.lastChild.remove();
}

function connectFeed() {
  state.feed?.close();
  const since = (Date.now() / 1000 - FEED_BACKLOG_S).toFixed(3);
  const source = new EventSource(tokenUrl("/api/events/stream", { since }));
  state.feed = source;
  source.addEventListener("open", () => setFeedState("live", "live"));
  source.addEventListener("error", () => setFeedState("reconnecting…", "down"));
  source.addEventListener("message", (msg) => addEvent(JSON.parse(msg.data)));
}

function setFeedState(text, cls) {
  const node = $("feed-state");
  node.textContent = text;
  node.className = `feed-state ${cls}`;
}

// -- polling -------------------------------------------------------------------------------------
async function poll() {
  if (!state.ready) return;
  try {
    const cameras = await api("/api/cameras");
    state.cameras = new Map(cameras.map((c) => [c.id, c]));
    const stats = await Promise.allSettled(
      cameras.filter((c) => c.enabled).map((c) => api(`/api/cameras/${encodeURIComponent(c.id)}/stats`)),
    );
    for (const r of stats) if (r.status === "fulfilled") state.stats.set(r.value.camera_id, r.value);
    state.capacity = await api("/api/capacity").catch(() => null);
    renderCapacity($("capacity"), state.capacity);
    renderGrid();
    if (state.detail && !state.cameras.has(state.detail.id)) {
      toast(`Camera ${state.detail.id} was removed.`);
      location.hash = "";
    } else if (state.detail) {
      fitStage();
      await refreshDetail();
    } else {
      startGridPlayers();
    }
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) console.warn("poll failed", err);
  }
}

async function pollHealth() {
  const node = $("health");
  try {
    const r = await fetch("/readyz");
    const h = await r.json();
    node.textContent = h.ready ? `ready · ${h.backend} on ${h.device}` : h.inference_error || "starting…";
    node.className = `health ${h.ready ? "ok" : "warn"}`;
  } catch {
    node.textContent = "server unreachable";
    node.className = "health bad";
  }
}

// -- API key -------------------------------------------------------------------------------------
function askKey(reason) {
  $("key-reason").textContent = reason || "Stored in this browser only and sent as a bearer token.";
  $("key-input").value = apiKey();
  $("key-dialog").showModal();
}

async function start() {
  try {
    state.settings = await api("/api/preview/settings");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return; // the key dialog is open; start() runs after it
    throw err;
  }
  state.ready = true;
  await poll();
  connectFeed();
  route();
}

function route() {
  const m = location.hash.match(/^#\/camera\/(.+)$/);
  if (m) openDetail(decodeURIComponent(m[1]));
  else showGrid();
}

function restartPlayers() {
  if (state.detail) openDetail(state.detail.id);
  else {
    stopGridPlayers();
    startGridPlayers();
  }
}

function init() {
  const params = new URLSearchParams(location.search);
  state.transport = params.get("transport") || localStorage.getItem("streamsrv.transport") || "auto";
  $("transport").value = state.transport;
  $("transport").addEventListener("change", (e) => {
    state.transport = e.target.value;
    localStorage.setItem("streamsrv.transport", state.transport);
    restartPlayers();
  });
  const motion = params.get("motion") ?? localStorage.getItem("streamsrv.motion");
  state.layers = motion === "1" ? ["motion"] : [];
  $("motion-layer").checked = state.layers.includes("motion");
  $("motion-layer").addEventListener("change", (e) => {
    state.layers = e.target.checked ? ["motion"] : [];
    localStorage.setItem("streamsrv.motion", e.target.checked ? "1" : "0");
    restartPlayers();
  });
  state.editor = new ZoneEditor({
    svg: $("editor-svg"),
    list: $("rule-list"),
    hint: $("editor-hint"),
    msg: $("editor-msg"),
    frameSize: () => frameSize(state.detail.id),
    onSaved: () => {
      toast("Rules saved: in effect now.", "ok");
      refreshDetail();
    },
  });
  $("add-zone").addEventListener("click", () => state.editor.startDrawing("zone"));
  $("add-line").addEventListener("click", () => state.editor.startDrawing("line"));
  $("save-rules").addEventListener("click", () => state.editor.save());
  $("discard-rules").addEventListener("click", () => state.editor.discard());
  $("edit-toggle").addEventListener("click", () => toggleEditor());
  $("back").addEventListener("click", () => (location.hash = ""));
  $("key-button").addEventListener("click", () => askKey());
  $("key-dialog").addEventListener("close", () => {
    if ($("key-dialog").returnValue !== "save") return;
    setApiKey($("key-input").value.trim());
    start()
      .then(restartPlayers)
      .catch((err) => toast(`Cannot start: ${err.message}`, "error"));
  });
  window.addEventListener("streamsrv:unauthorized", () => {
    if (!$("key-dialog").open) askKey("This server needs an API key.");
  });
  window.addEventListener("hashchange", route);
  // Leaving the page: close WebRTC peers now (and tell the server) rather than waiting for ICE consent to expire.
  window.addEventListener("pagehide", () => {
    stopGridPlayers();
    closeDetail();
    state.feed?.close();
  });
  setInterval(poll, POLL_MS);
  setInterval(pollHealth, HEALTH_POLL_MS);
  pollHealth();
  start().catch((err) => toast(`Cannot start: ${err.message}`, "error"));
  window.streamsrv = state; // for debugging from the console (and the end-to-end test)
}

init();
