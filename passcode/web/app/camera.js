// The citizen page's camera reader, for venue codes (场所码) on posters: getUserMedia → <video>
// → a canvas → jsQR, a few frames a second, as the scanner page does. jsQR (npm, served at
// /vendor/jsqr.js) is a UMD bundle that defines self.jsQR; it is imported only when the
// check-in screen first asks for the camera, so the code screen loads nothing more on a slow
// connection. A dynamic import() is a script URL the policy ('self') allows and no Trusted
// Types sink, unlike a <script> element created here.

const FRAME_INTERVAL_MS = 200; // five frames a second
const MAX_WIDTH = 800; // frames are scaled down to this before decoding (a poster's QR is big)
const DECODER_URL = "/vendor/jsqr.js";

let decoder = null;

/** jsQR, imported once; rejects when it cannot be loaded (not installed, offline). */
function loadDecoder() {
  if (typeof globalThis.jsQR === "function") return Promise.resolve(globalThis.jsQR);
  if (decoder === null) {
    decoder = import(DECODER_URL).then(() => {
      if (typeof globalThis.jsQR !== "function") throw new Error("jsQR did not load");
      return globalThis.jsQR;
    });
    decoder.catch(() => {
      decoder = null; // a later try may succeed (back online)
    });
  }
  return decoder;
}

export class CameraReader {
  /** `onCode(text)` gets each decoded text; `onState(state)` one of "starting", "scanning",
   * "stopped", "denied", "unavailable", "no-decoder". */
  constructor(video, canvas, { onCode, onState }) {
    this.video = video;
    this.canvas = canvas;
    this.onCode = onCode;
    this.onState = onState;
    this.stream = null;
    this.timer = null;
    this.decode = null;
    this.wanted = false; // stop() during a pending start() wins
  }

  get running() {
    return this.stream !== null;
  }

  async start() {
    if (this.stream !== null) return;
    this.wanted = true;
    if (!navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== "function") {
      this.wanted = false;
      this.onState("unavailable"); // no camera API (or not a secure context)
      return;
    }
    this.onState("starting");
    try {
      this.decode = await loadDecoder();
    } catch {
      if (this.wanted) this.onState("no-decoder");
      this.wanted = false;
      return;
    }
    if (!this.wanted) return; // stopped while the decoder loaded
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } },
      });
    } catch (error) {
      const denied = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
      this.wanted = false;
      this.onState(denied ? "denied" : "unavailable");
      return;
    }
    if (!this.wanted) {
      for (const track of stream.getTracks()) track.stop();
      return;
    }
    this.stream = stream;
    this.video.srcObject = stream;
    try {
      await this.video.play();
    } catch {
      // a muted inline video may play; a refusal only delays the first frame
    }
    this.onState("scanning");
    this.schedule();
  }

  stop() {
    const was = this.stream !== null || this.wanted; // running, or still starting
    this.wanted = false;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stream !== null) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.video.srcObject = null;
    if (was) this.onState("stopped");
  }

  schedule() {
    this.timer = setTimeout(() => this.tick(), FRAME_INTERVAL_MS);
  }

  tick() {
    if (this.stream === null) return;
    let text = null;
    try {
      text = this.decodeFrame();
    } finally {
      if (this.stream !== null) this.schedule();
    }
    if (text) this.onCode(text);
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
    const found = this.decode(image.data, w, h, { inversionAttempts: "dontInvert" });
    return found && found.data ? found.data : null;
  }
}
