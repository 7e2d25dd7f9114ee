// A live camera picture: WebRTC (one POST with the complete offer, no trickle ICE), falling back to MJPEG when
// WebRTC is unavailable, refused or does not connect in time.

import { api, tokenUrl } from "./api.js";

const GATHER_TIMEOUT_MS = 3000; // STUN/TURN answers that come later are not waited for
const CONNECT_TIMEOUT_MS = 10000;
const DISCONNECTED_GRACE_MS = 5000; // "disconnected" often recovers on its own
const MJPEG_RETRY_MS = 3000;

function waitForGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_TIMEOUT_MS);
  });
}

export class Player {
  // transport: "auto" | "webrtc" | "mjpeg"; layers: optional overlay layers (["motion"]);
  // onMode(mode, detail) reports "webrtc", "mjpeg" or "error".
  constructor(cameraId, host, { transport = "auto", layers = [], iceServers = [], onMode = () => {} } = {}) {
    this.cameraId = cameraId;
    this.host = host;
    this.transport = transport;
    this.layers = layers;
    this.iceServers = iceServers;
    this.onMode = onMode;
    this.pc = null;
    this.sessionId = null;
    this.element = null;
    this.generation = 0; // bumps on stop, so late callbacks of an old connection do nothing
  }

  // The camera's preview URL for `what` (mjpeg, webrtc), asking for the chosen layers.
  url(what) {
    const query = new URLSearchParams(this.layers.map((layer) => ["layers", layer])).toString();
    return `/api/cameras/${encodeURIComponent(this.cameraId)}/${what}${query ? `?${query}` : ""}`;
  }

  start() {
    const gen = ++this.generation;
    if (this.transport === "mjpeg" || !window.RTCPeerConnection) {
      this.startMjpeg(gen);
      return;
    }
    this.startWebrtc(gen).catch((err) => this.webrtcFailed(gen, err.message || String(err)));
  }

  stop() {
    this.generation++;
    this.closePeer();
    if (this.element) {
      if (this.element.tagName === "IMG") this.element.src = ""; // ends the multipart request
      this.element.remove();
      this.element = null;
    }
  }

  closePeer() {
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
    if (this.sessionId) {
      const path = `/api/cameras/${encodeURIComponent(this.cameraId)}/webrtc/${this.sessionId}`;
      api(path, { method: "DELETE", keepalive: true }).catch(() => {}); // the server may have closed it already
      this.sessionId = null;
    }
  }

  webrtcFailed(gen, reason) {
    if (gen !== this.generation) return;
    console.warn(`camera ${this.cameraId}: WebRTC failed (${reason})`);
    this.closePeer();
    if (this.element) {
      this.element.remove();
      this.element = null;
    }
    if (this.transport === "auto") this.startMjpeg(gen, reason);
    else this.onMode("error", reason);
  }

  async startWebrtc(gen) {
    const video = document.createElement("video");
    Object.assign(video, { autoplay: true, muted: true, playsInline: true });
    video.className = "live live-video";
    video.dataset.camera = this.cameraId;
    this.element = video;
    this.host.replaceChildren(video);

    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addEventListener("track", (e) => {
      video.srcObject = e.streams[0] || new MediaStream([e.track]);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForGathering(pc);
    if (gen !== this.generation) return;
    const answer = await api(this.url("webrtc"), {
      method: "POST",
      body: { type: "offer", sdp: pc.localDescription.sdp },
    });
    if (gen !== this.generation) {
      this.sessionId = answer.session_id;
      this.closePeer();
      return;
    }
    this.sessionId = answer.session_id;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });

    const timer = setTimeout(() => this.webrtcFailed(gen, "did not connect in time"), CONNECT_TIMEOUT_MS);
    let disconnectedTimer = null;
    pc.addEventListener("connectionstatechange", () => {
      const state = pc.connectionState;
      if (state === "connected") {
        clearTimeout(timer);
        clearTimeout(disconnectedTimer);
        if (gen === this.generation) this.onMode("webrtc");
      } else if (state === "failed") {
        clearTimeout(timer);
        this.webrtcFailed(gen, "connection failed");
      } else if (state === "disconnected") {
        disconnectedTimer = setTimeout(() => this.webrtcFailed(gen, "connection lost"), DISCONNECTED_GRACE_MS);
      }
    });
  }

  startMjpeg(gen, reason) {
    const img = document.createElement("img");
    img.className = "live live-mjpeg";
    img.alt = `Live view of ${this.cameraId}`;
    img.dataset.camera = this.cameraId;
    img.addEventListener("error", () => {
      if (gen !== this.generation) return;
      this.onMode("error", "no picture");
      setTimeout(() => {
        if (gen === this.generation) img.src = tokenUrl(this.url("mjpeg"));
      }, MJPEG_RETRY_MS);
    });
    img.addEventListener("load", () => gen === this.generation && this.onMode("mjpeg", reason), { once: true });
    img.src = tokenUrl(this.url("mjpeg"));
    this.element = img;
    this.host.replaceChildren(img);
    this.onMode("mjpeg", reason);
  }
}
