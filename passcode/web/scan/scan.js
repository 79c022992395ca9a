// The scanner page (/scan/): a phone or tablet at a door reads citizens' codes with its camera,
// asks POST /v1/verify and shows the answer full screen with sound and vibration. When the
// service cannot be reached it checks a PC1 pass on the device (offline.js) and keeps the scan
// to send with POST /v1/verify/batch later (queue.js).
//
// Where things are kept on the device, and why:
// - The terminal key: localStorage (`passcode.scan.terminalKey`). A door device is set up once
//   and used by successive staff for days; typing a long key at every page load would not
//   happen, and sessionStorage is lost with the tab. A cookie would ride along with every
//   request to the origin (a CSRF surface) and reach server logs; localStorage is only sent
//   where this page puts it, the Authorization header (api.js), never a URL or the console.
//   The risk: any script running on this origin can read it, and so can anyone holding the
//   unlocked device. Hence the strict CSP (no inline or third-party script) on every page of
//   the origin, and a lost device means revoking its terminal (`passcode terminal revoke`).
//   "Forget this device's key" removes it.
// - The verification keys (GET /v1/keys) with their ETag, the learnt server-time offset and the
//   queue of offline scans (pass texts: short-lived, and needed to be verified later):
//   localStorage too, so they survive a reload while offline.
// - The language choice.
//
// Browser tests: the hooks they use are listed at the end of this file.

import { fetchKeys, probeKey, verify, verifyBatch } from "./api.js";
import { CameraScanner } from "./camera.js";
import { now, ServerClock } from "./clock.js";
import { signal, unlockAudio } from "./feedback.js";
import { LANGS, lang, loadLang, preferredLang, t, translatePage } from "./i18n.js";
import { decideOffline, importKeySet } from "./offline.js";
import { ScanQueue } from "./queue.js";

const KEY_STORAGE = "passcode.scan.terminalKey";
const KEYS_STORAGE = "passcode.scan.keys";
const RESULT_MS = 4000; // how long a result stays on screen unless dismissed
const QUIET_MS = 5000; // the same code still in view is not checked again for this long
const SYNC_EVERY_MS = 20000; // how often the queue is tried while scans wait
const KEYS_EVERY_MS = 5 * 60 * 1000; // how often the key set is revalidated (ETag)

const storage = globalThis.localStorage;
const serverClock = new ServerClock(storage);
const queue = new ScanQueue(storage);
const el = (id) => document.getElementById(id);

/** A test setting from globalThis.__PASSCODE_TEST__, else the default. */
function setting(name, fallback) {
  const value = globalThis.__PASSCODE_TEST__?.[name];
  return typeof value === "number" && Number.isFinite(value) ? value : fallback;
}

const state = {
  key: storage.getItem(KEY_STORAGE),
  keys: new Map(),
  reachable: true,
  flushing: false,
  lastCode: null,
  lastAt: Number.NEGATIVE_INFINITY,
  resultTimer: null,
  busy: false,
  camera: "stopped",
  setupMessage: null,
  syncMessages: [],
  result: null,
};

const camera = new CameraScanner(el("camera"), el("frame"), {
  onCode: (text) => handleCode(text),
  onState: (cameraState) => {
    state.camera = cameraState;
    renderCamera();
  },
});

// --- rendering ------------------------------------------------------------------------------------

function renderCamera() {
  const status = el("camera-status");
  const errors = ["denied", "unavailable", "no-decoder"];
  status.dataset.state = errors.includes(state.camera) ? "error" : state.camera;
  status.textContent = t(`camera.${state.camera.replace("-", "_")}`);
  el("start-camera").hidden = camera.running;
  el("stop-camera").hidden = !camera.running;
}

function renderNet() {
  const online = navigator.onLine && state.reachable;
  const net = el("net-status");
  net.dataset.online = String(online);
  net.textContent = t(online ? "net.online" : "net.offline");
  const count = queue.size;
  const badge = el("queue-status");
  badge.dataset.count = String(count);
  badge.textContent = count > 0 ? t("queue.count", { count }) : "";
}

function renderSetup() {
  const message = state.setupMessage;
  el("setup-message").textContent = message ? t(message) : "";
  el("setup").hidden = Boolean(state.key);
  el("scanner").hidden = !state.key;
}

function renderSync() {
  el("sync-status").textContent = state.syncMessages.map(([key, values]) => t(key, values)).join(" ");
}

const ICONS = { admit: "✓", deny: "✗", invalid: "!", unverified: "?" };

function reasonText(reason) {
  const text = t(`reason.${reason}`);
  return text === `reason.${reason}` ? t("reason.unknown", { reason }) : text;
}

function renderResult() {
  const box = el("result");
  const r = state.result;
  if (r === null) {
    box.hidden = true;
    return;
  }
  box.dataset.decision = r.decision;
  box.dataset.reason = r.reason;
  box.dataset.offline = String(Boolean(r.offline));
  box.dataset.kind = r.kind ?? "";
  el("result-icon").textContent = ICONS[r.decision] ?? "!";
  el("result-word").textContent = t(`decision.${r.decision}`);
  const reasons = [reasonText(r.reason)];
  if (r.queueFull) reasons.push(t("queue.full"));
  el("result-reason").textContent = reasons.join(" ");
  el("result-offline").hidden = !r.offline;
  el("result-offline").textContent = r.offline ? t("result.offline") : "";
  const name = r.holder && typeof r.holder.name === "string" ? r.holder.name : "";
  el("result-holder").textContent = name ? t("result.holder", { name }) : "";
  el("result-time").textContent = t("result.time", {
    time: new Date(r.at).toLocaleTimeString(lang(), { hour12: false }),
  });
  box.hidden = false;
}

function renderAll() {
  translatePage();
  const other = LANGS.find((l) => l !== lang());
  el("lang-toggle").lang = other;
  renderSetup();
  renderNet();
  renderCamera();
  renderSync();
  renderResult();
}

// --- results ----------------------------------------------------------------------------------------

function showResult(answer, extra = {}) {
  clearTimeout(state.resultTimer);
  state.result = { ...answer, ...extra, at: now() };
  camera.pause(true);
  renderResult();
  signal(answer.decision);
  el("result-close").focus();
  state.resultTimer = setTimeout(hideResult, setting("resultMs", RESULT_MS));
}

function hideResult() {
  clearTimeout(state.resultTimer);
  state.resultTimer = null;
  state.result = null;
  state.lastAt = now(); // quiet from when the screen is free again
  renderResult();
  camera.pause(false);
}

// --- verifying ----------------------------------------------------------------------------------------

async function handleCode(text) {
  if (!state.key || state.busy || state.result !== null) return;
  if (text === state.lastCode && now() - state.lastAt < setting("quietMs", QUIET_MS)) return;
  state.busy = true;
  state.lastCode = text;
  state.lastAt = now();
  try {
    await check(text);
  } finally {
    state.busy = false;
  }
}

/** One scan: the service's answer, or the device's own check when it cannot answer. */
async function check(text) {
  // The scan id is made here, once, so the live request and a later batch of the same scan
  // are recorded once by the service.
  const scan = { scan_id: crypto.randomUUID(), code: text, scanned_at: new Date(now()).toISOString() };
  if (!navigator.onLine) {
    await checkOffline(scan);
    return;
  }
  let answer;
  try {
    answer = await verify(state.key, text, scan.scan_id);
  } catch {
    state.reachable = false;
    await checkOffline(scan);
    return;
  }
  state.reachable = true;
  const { status, body } = answer;
  if (status === 200 && body && typeof body.decision === "string") {
    serverClock.learn(body.server_time, answer.sentAt, answer.receivedAt);
    renderNet();
    showResult({ ...body, offline: false });
    flushSoon();
  } else if (status === 401 || status === 403) {
    keyRefused();
    showResult({ decision: "unverified", reason: "key_refused", kind: null, offline: false });
  } else if (status === 400 || status === 413 || status === 415) {
    renderNet();
    showResult({ decision: "invalid", reason: "malformed", kind: null, offline: false });
  } else {
    // 429, 503 "unverified" and other failures: the service did not decide; the device does,
    // and the scan waits for the batch.
    await checkOffline(scan);
  }
}

async function checkOffline(scan) {
  let queueFull = false;
  try {
    queue.add(scan); // before the result is shown: the scan is kept whatever happens next
  } catch {
    queueFull = true;
  }
  renderNet();
  const answer = await decideOffline(scan.code, state.keys, serverClock.nowSeconds());
  showResult(answer, { queueFull });
}

// --- the offline queue and the key set ------------------------------------------------------------

function flushSoon() {
  if (queue.size > 0) setTimeout(flush, 0);
}

async function flush() {
  if (state.flushing || !state.key || queue.size === 0 || !navigator.onLine) return;
  state.flushing = true;
  try {
    const key = state.key;
    const outcome = await queue.flush(async (scans) => {
      const answer = await verifyBatch(key, scans);
      const last = answer.body?.results?.at(-1);
      if (answer.status === 200 && last) serverClock.learn(last.server_time, answer.sentAt, answer.receivedAt);
      return answer;
    });
    state.reachable = outcome.stopped !== "network";
    const messages = [];
    if (outcome.sent > 0) messages.push(["sync.sent", { count: outcome.sent }]);
    if (outcome.refused > 0) messages.push(["sync.refused", { count: outcome.refused }]);
    if (outcome.stopped === "credential") {
      messages.push(["sync.credential", {}]);
      keyRefused();
    }
    if (messages.length > 0) state.syncMessages = messages;
  } finally {
    state.flushing = false;
    renderNet();
    renderSync();
  }
}

function keyRefused() {
  state.setupMessage = "key.refused";
  renderSetup();
  el("setup").hidden = false;
}

async function loadCachedKeys() {
  try {
    const cached = JSON.parse(storage.getItem(KEYS_STORAGE) ?? "null");
    if (cached && cached.jwks) state.keys = await importKeySet(cached.jwks);
  } catch {
    state.keys = new Map();
  }
}

async function refreshKeys() {
  if (!navigator.onLine) return;
  let cached = null;
  try {
    cached = JSON.parse(storage.getItem(KEYS_STORAGE) ?? "null");
  } catch {
    cached = null;
  }
  try {
    const answer = await fetchKeys(cached && state.keys.size > 0 ? cached.etag : null);
    if (answer.status === 200 && answer.body && Array.isArray(answer.body.keys)) {
      state.keys = await importKeySet(answer.body);
      storage.setItem(
        KEYS_STORAGE,
        JSON.stringify({ etag: answer.headers.get("ETag"), jwks: answer.body }),
      );
    }
  } catch {
    // offline: the cached set stays in use
  }
}

// --- setup --------------------------------------------------------------------------------------------

async function saveKey(event) {
  event.preventDefault();
  unlockAudio();
  const input = el("terminal-key");
  const key = input.value.trim();
  if (!key) return;
  state.setupMessage = "key.checking";
  renderSetup();
  const verdict = await probeKey(key);
  if (verdict === "unknown" || verdict === "revoked") {
    state.setupMessage = `key.${verdict}`;
    renderSetup();
    input.focus();
    return;
  }
  storage.setItem(KEY_STORAGE, key);
  state.key = key;
  input.value = "";
  state.setupMessage = verdict === "ok" ? "key.ok" : "key.unreachable";
  renderSetup();
  el("scanner").hidden = false;
  el("setup").hidden = true;
  flushSoon();
  await camera.start();
}

function forgetKey() {
  const count = queue.size;
  if (count > 0 && !globalThis.confirm(t("key.forget_confirm", { count }))) return;
  queue.clear();
  storage.removeItem(KEY_STORAGE);
  state.key = null;
  state.setupMessage = null;
  camera.stop();
  renderAll();
  el("terminal-key").focus();
}

async function switchLang() {
  const other = LANGS.find((l) => l !== lang());
  await loadLang(other, storage);
  renderAll();
}

async function autoStartCamera() {
  try {
    const permission = await navigator.permissions?.query({ name: "camera" });
    if (permission?.state === "granted") await camera.start();
  } catch {
    // the Permissions API does not know "camera" everywhere: the button starts it
  }
}

async function init() {
  await loadLang(preferredLang(storage), storage);
  await loadCachedKeys();
  renderAll();
  el("key-form").addEventListener("submit", saveKey);
  el("forget-key").addEventListener("click", forgetKey);
  el("lang-toggle").addEventListener("click", switchLang);
  el("start-camera").addEventListener("click", () => {
    unlockAudio();
    camera.start();
  });
  el("stop-camera").addEventListener("click", () => camera.stop());
  el("result-close").addEventListener("click", hideResult);
  el("manual-form").addEventListener("submit", (event) => {
    event.preventDefault();
    unlockAudio();
    const input = el("manual-code");
    const text = input.value.trim();
    input.value = "";
    if (text) {
      state.lastCode = null; // a typed code is always checked, even the same one again
      handleCode(text);
    }
  });
  document.addEventListener("pointerdown", unlockAudio, { once: true });
  globalThis.addEventListener("online", () => {
    state.reachable = true;
    renderNet();
    refreshKeys();
    flush();
  });
  globalThis.addEventListener("offline", renderNet);
  globalThis.addEventListener("storage", renderNet); // another tab changed the queue
  setInterval(flush, SYNC_EVERY_MS);
  setInterval(refreshKeys, KEYS_EVERY_MS);
  await refreshKeys();
  flushSoon();
  if (state.key) await autoStartCamera();
  document.body.dataset.ready = "true";
}

init();

// Scanner page test hooks (for the browser tests):
// - Clock: `globalThis.__PASSCODE_TEST__ = { now: () => ms }` before load (clock.js); also
//   `resultMs` (how long a result stays up) and `quietMs` (how soon the same code is checked
//   again) as numbers in milliseconds.
// - Ready: `body[data-ready="true"]` once catalogues, keys and listeners are in place.
// - Setup: #terminal-key, #save-key (form #key-form), #setup-message; #forget-key.
// - Result: #result (role=alert) with data-decision (admit|deny|invalid|unverified),
//   data-reason (the reason code), data-offline ("true" when checked on the device),
//   data-kind; #result-word, #result-reason, #result-offline, #result-close.
// - Offline: Playwright's context.set_offline(True) (navigator.onLine false, fetch fails);
//   #net-status[data-online], #queue-status[data-count]; #sync-status after an upload.
// - Camera: Chromium's fake camera (see NOTES.md) with the camera permission; it starts by
//   itself when the permission is granted, else #start-camera; #camera-status[data-state].
// - Typed codes: #manual-code + #manual-submit check a text without the camera.
