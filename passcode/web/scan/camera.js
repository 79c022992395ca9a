// Camera scanning: getUserMedia → <video> → a canvas → jsQR, a few frames a second.
// BarcodeDetector is absent on Linux Chromium, so the decoder is jsQR (npm, served by the
// service at /vendor/jsqr.js as a classic script that defines globalThis.jsQR).

const FRAME_INTERVAL_MS = 200; // five frames a second: quick enough at a door, light on a phone
const MAX_WIDTH = 640; // frames are scaled down to this before decoding

export class CameraScanner {
  /** `onCode(text)` is called with each decoded text; `onState(state, detail)` with
   * "starting", "scanning", "stopped", "denied", "unavailable" or "no-decoder". */
  constructor(video, canvas, { onCode, onState }) {
    this.video = video;
    this.canvas = canvas;
    this.onCode = onCode;
    this.onState = onState;
    this.stream = null;
    this.timer = null;
    this.paused = false;
  }

  get running() {
    return this.stream !== null;
  }

  async start() {
    if (this.stream !== null) return;
    if (typeof globalThis.jsQR !== "function") {
      this.onState("no-decoder");
      return;
    }
    if (!navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== "function") {
      this.onState("unavailable");
      return;
    }
    this.onState("starting");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { facingMode: { ideal: "environment" }, width: { ideal: 640 }, height: { ideal: 480 } },
      });
    } catch (err) {
      this.stream = null;
      this.onState(err && err.name === "NotAllowedError" ? "denied" : "unavailable");
      return;
    }
    this.video.srcObject = this.stream;
    try {
      await this.video.play();
    } catch {
      // autoplay of a muted video is allowed; a failure here only delays the first frame
    }
    this.onState("scanning");
    this.schedule();
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stream !== null) {
      for (const track of this.stream.getTracks()) track.stop();
    }
    this.stream = null;
    this.video.srcObject = null;
    this.onState("stopped");
  }

  /** While a result is on screen, frames are not decoded (the same code stays in view). */
  pause(paused) {
    this.paused = paused;
  }

  schedule() {
    this.timer = setTimeout(() => this.tick(), FRAME_INTERVAL_MS);
  }

  tick() {
    if (this.stream === null) return;
    try {
      if (!this.paused) {
        const text = this.decodeFrame();
        if (text) this.onCode(text);
      }
    } finally {
      if (this.stream !== null) this.schedule();
    }
  }

  decodeFrame() {
    const { videoWidth: vw, videoHeight: vh } = this.video;
    if (!vw || !vh || this.video.readyState < 2) return null;
    const scale = Math.min(1, MAX_WIDTH / vw);
    const w = Math.round(vw * scale);
    const h = Math.round(vh * scale);
    if (this.canvas.width !== w) this.canvas.width = w;
    if (this.canvas.height !== h) this.canvas.height = h;
    const ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(this.video, 0, 0, w, h);
    const image = ctx.getImageData(0, 0, w, h);
    const found = globalThis.jsQR(image.data, w, h, { inversionAttempts: "dontInvert" });
    return found && found.data ? found.data : null;
  }
}
