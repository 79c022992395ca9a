// Every time the scanner page reads goes through `now()`, so a browser test can move it.
//
// Test hook: define `globalThis.__PASSCODE_TEST__ = { now: () => <milliseconds since 1970> }`
// before the page's scripts run (Playwright: `page.add_init_script(...)`); `now()` then returns
// what it returns. Without the hook it is `Date.now()` (so Playwright's `page.clock` works too).

/** The device's time in milliseconds since the Unix epoch (the one clock of this page). */
export function now() {
  const hook = globalThis.__PASSCODE_TEST__;
  if (hook && typeof hook.now === "function") return Number(hook.now());
  return Date.now();
}

const OFFSET_KEY = "passcode.scan.serverOffset";

/**
 * The server's time as learnt from its answers' `server_time`, so an offline check of a pass's
 * expiry uses the service's clock and not a phone's that may be minutes off (DESIGN §5).
 * The offset (server minus device, in ms) is kept in `storage` so it survives a reload while
 * offline; `clock` is injectable for tests.
 */
export class ServerClock {
  constructor(storage = null, clock = now) {
    this.storage = storage;
    this.clock = clock;
    this.offsetMs = 0;
    this.learnt = false;
    const saved = storage ? Number.parseFloat(storage.getItem(OFFSET_KEY) ?? "") : Number.NaN;
    if (Number.isFinite(saved)) {
      this.offsetMs = saved;
      this.learnt = true;
    }
  }

  /** Learn from one answer: `serverTime` (RFC 3339) was read between `sentAt` and
   * `receivedAt` (device ms); its midpoint is the best guess of when the server wrote it. */
  learn(serverTime, sentAt, receivedAt) {
    const server = Date.parse(serverTime);
    if (!Number.isFinite(server) || !Number.isFinite(sentAt) || !Number.isFinite(receivedAt)) {
      return;
    }
    this.offsetMs = server - (sentAt + receivedAt) / 2;
    this.learnt = true;
    if (this.storage) this.storage.setItem(OFFSET_KEY, String(this.offsetMs));
  }

  /** The server's time now, in milliseconds. */
  nowMs() {
    return this.clock() + this.offsetMs;
  }

  /** The server's time now, in whole Unix seconds (a pass's `iat`/`exp` unit). */
  nowSeconds() {
    return Math.floor(this.nowMs() / 1000);
  }
}
