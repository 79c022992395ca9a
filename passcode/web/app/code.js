// The code screen: the current pass's QR, its colour as a band, in words and with an icon, the
// masked name, a live clock with seconds and a moving mark (a screenshot is visibly stale), a
// refresh before the pass's refresh_in, plain words for what to do when not green, the last
// pass shown offline until it expires, then "expired — reconnect".
import { ApiError, NetworkError } from "../common/api.js";
import { serverNow, serverOffset, setServerOffset } from "../common/clock.js";
import { bind, currentLang, msg, onLanguageChange, render } from "../common/i18n.js";
import { drawQr } from "./qr.js";
import { loadPass, savePass } from "./store.js";

const WORDS = {
  green: msg("color.green"),
  yellow: msg("color.yellow"),
  red: msg("color.red"),
};
const ADVICE = {
  green: msg("advice.green"),
  yellow: msg("advice.yellow"),
  red: msg("advice.red"),
};
const TICK_MS = 250;
const RETRY_MS = 5000; // after a failed refresh, while the kept pass is still shown
const SWEEP_MS = 4000; // the moving mark crosses the screen in this time

function byId(id) {
  return document.getElementById(id);
}

/**
 * The code screen's controller. `fetchPass()` resolves to the GET /v1/pass answer (or throws
 * ApiError / NetworkError); `needDeclaration()` and `signedOut()` are called when the service
 * answers 404 (no valid declaration) or 401; `announce(text)` speaks a change politely.
 */
export function createCodeScreen({ fetchPass, needDeclaration, signedOut, announce }) {
  const el = {
    band: byId("pass-band"),
    icon: byId("pass-icon"),
    words: byId("pass-color-text"),
    holder: byId("pass-holder"),
    figure: byId("pass-figure"),
    qr: byId("pass-qr"),
    qrLabel: byId("pass-qr-label"),
    advice: byId("pass-advice"),
    validity: byId("pass-validity"),
    offline: byId("pass-offline"),
    expired: byId("pass-expired"),
    retry: byId("pass-retry"),
    clock: byId("clock"),
    date: byId("clock-date"),
    mark: byId("ticker-mark"),
  };
  let pass = null; // the pass shown: the last answer, or the kept one
  let shownCode = null;
  let offline = false;
  let fetching = false;
  let refreshAt = 0; // serverNow() at which to fetch again
  let running = null;
  let lastAnnounced = null;
  let timeFormat = null;
  let dateFormat = null;

  function formats() {
    const lang = currentLang();
    timeFormat = new Intl.DateTimeFormat(lang, {
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hourCycle: "h23",
    });
    dateFormat = new Intl.DateTimeFormat(lang, {
      year: "numeric",
      month: "long",
      day: "numeric",
      weekday: "long",
    });
  }

  function isExpired(at) {
    return pass !== null && at >= Date.parse(pass.expires_at);
  }

  function drawClock(at) {
    const when = new Date(at);
    el.clock.textContent = timeFormat.format(when);
    el.clock.dateTime = when.toISOString();
    el.date.textContent = dateFormat.format(when);
    const fraction = (((at % SWEEP_MS) + SWEEP_MS) % SWEEP_MS) / SWEEP_MS;
    el.mark.style.setProperty("--sweep", fraction.toFixed(3));
  }

  function drawPass(at) {
    if (pass === null) return;
    const expired = isExpired(at);
    const state = expired ? "expired" : pass.color;
    el.band.dataset.color = state;
    el.icon.setAttribute("href", `#icon-${state}`);
    el.expired.hidden = !expired;
    el.figure.hidden = expired;
    bind(el.holder, msg("code.holder", { name: pass.holder.name }));
    if (expired) {
      bind(el.words, msg("code.expired.title"));
      bind(el.advice, null);
      bind(el.validity, null);
      el.offline.hidden = true;
      shownCode = null;
      el.qr.replaceChildren();
      if (lastAnnounced !== "expired") {
        lastAnnounced = "expired";
        announce(render(msg("code.expired.title")));
      }
      return;
    }
    bind(el.words, WORDS[pass.color]);
    bind(el.advice, ADVICE[pass.color]);
    const until = timeFormat.format(new Date(Date.parse(pass.expires_at)));
    bind(el.validity, msg("code.valid_until", { time: until }));
    el.offline.hidden = !offline;
    if (offline) bind(el.offline, msg("code.offline", { time: until }));
    if (shownCode !== pass.code) {
      drawQr(el.qr, pass.code, pass.color);
      shownCode = pass.code;
    }
    bind(el.qrLabel, msg("code.qr_label", { color: render(WORDS[pass.color]) }));
    if (lastAnnounced !== pass.color) {
      lastAnnounced = pass.color;
      announce(render(msg("announce.color", { color: render(WORDS[pass.color]) })));
    }
  }

  async function refresh() {
    if (fetching) return;
    fetching = true;
    try {
      const answer = await fetchPass();
      pass = answer;
      offline = false;
      savePass(answer, serverOffset());
      refreshAt = serverNow() + answer.refresh_in * 1000;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        stop();
        needDeclaration();
        return;
      }
      if (error instanceof ApiError && error.status === 401) {
        stop();
        signedOut();
        return;
      }
      // Offline, overloaded (429, 503) or failing: keep showing the kept pass while it lasts.
      offline = true;
      const wait =
        error instanceof ApiError && error.retryAfter ? error.retryAfter * 1000 : RETRY_MS;
      refreshAt = serverNow() + wait;
      if (!(error instanceof NetworkError) && !(error instanceof ApiError)) throw error;
    } finally {
      fetching = false;
      if (running !== null) tick(); // stopped (404, 401, sign-out): nothing more to fetch
    }
  }

  function tick() {
    const at = serverNow();
    drawClock(at);
    drawPass(at);
    if (!fetching && at >= refreshAt) refresh();
  }

  function stop() {
    if (running !== null) clearInterval(running);
    running = null;
  }

  /** Show the kept pass at once (a slow or absent network), then fetch a fresh one. */
  function start() {
    stop();
    const kept = loadPass();
    if (kept !== null) {
      pass = kept;
      setServerOffset(kept.offset_ms);
      offline = true; // until an answer comes
    }
    refreshAt = 0;
    running = setInterval(tick, TICK_MS);
    tick();
  }

  /** Forget what is shown (sign-out). */
  function clear() {
    stop();
    pass = null;
    shownCode = null;
    lastAnnounced = null;
    el.qr.replaceChildren();
  }

  formats();
  onLanguageChange(() => {
    formats();
    if (running !== null) tick();
  });
  // The browser's own word on connectivity: shown at once, and a fresh pass fetched on return.
  window.addEventListener("offline", () => {
    offline = true;
    if (running !== null) tick();
  });
  window.addEventListener("online", () => {
    refreshAt = 0;
    if (running !== null) tick();
  });
  el.retry.addEventListener("click", () => {
    refreshAt = 0;
    refresh();
  });
  return { start, stop, clear, refreshNow: () => ((refreshAt = 0), refresh()) };
}
