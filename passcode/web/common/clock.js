// The one source of "now" for every page's time logic (clock display, refresh, expiry).
// Browser tests control it by defining `window.__passcodeNow` (a function returning epoch
// milliseconds) before the page's scripts run, e.g. with Playwright's add_init_script; it is
// read on every call, so a test may move time while the page runs. Nothing else reads Date.now().

/** Epoch milliseconds: the test hook's answer when it is defined, else the device clock. */
export function now() {
  const hook = globalThis.__passcodeNow;
  if (typeof hook === "function") {
    const value = Number(hook());
    if (Number.isFinite(value)) return value;
  }
  return Date.now();
}

// The server's clock minus the device's, from the Date header of the last API answer (the
// service judges a pass's expiry by its own clock; a phone set a minute wrong must not show a
// fresh code as expired, or a stale one as fresh). A second's precision is enough here.
let offsetMs = 0;

/** Note the Date header of an API answer received now. */
export function noteServerDate(header) {
  const server = Date.parse(header || "");
  if (Number.isFinite(server)) offsetMs = server - now();
}

/** Set the offset directly (a kept pass's, when the page starts offline). */
export function setServerOffset(ms) {
  if (Number.isFinite(ms)) offsetMs = ms;
}

export function serverOffset() {
  return offsetMs;
}

/** The server's time, as best known: now() corrected by the last answer's Date header. */
export function serverNow() {
  return now() + offsetMs;
}
