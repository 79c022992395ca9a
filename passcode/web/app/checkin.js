// Venue check-in (场所码, DESIGN §4): the phone reads a place's poster (its QR holds the venue
// code text, "PP1:…") with the camera, or the code arrives in the page's URL fragment
// (/app/#checkin=<code, percent-encoded>), or the citizen pastes it; the page sends
// POST /v1/checkins with the ID token and a checkin_id made on the device (a retry of the same
// attempt reuses it, so the service records it once), then shows a full-screen card for the
// staff: the colour as a band, in words and with an icon, the masked name, the place, the time
// of the check-in, a live clock with seconds and a moving mark (a screenshot is visibly stale).
//
// Why a fragment and never a query string: the fragment is not sent to the server, so it is in
// no access log and no proxy's; the page reads it, removes it from the address bar and keeps
// it through a sign-in (auth.js returns to the same fragment).
//
// Element ids (for the browser tests):
//   #nav-checkin             on the code screen: opens the check-in screen (and the camera)
//   #screen-checkin          the screen (body[data-screen="screen-checkin"] while shown)
//   #checkin-title           its heading (focused on open)
//   #checkin-scan            the reading part: camera, notes, manual entry (hidden on the card)
//   #checkin-video, #checkin-canvas   the camera's view and the decoding canvas (not shown)
//   #checkin-camera-note     the camera's state in words (role=status)
//   #checkin-camera-start    (re)start the camera (shown when it is not running)
//   #checkin-form            manual entry: #checkin-code (textarea), #checkin-submit
//   #checkin-code-error      the manual entry's own message (empty field, not a venue code)
//   #checkin-error           a refusal or failure in plain words (role=alert), with
//                            data-problem = venue-code-invalid | unknown-venue |
//                            venue-code-revoked | no-declaration | network | busy | failed
//   #checkin-retry           send the same attempt again (same checkin_id): network, busy
//   #checkin-declare         go to the declaration form (no-declaration)
//   #checkin-sending         "Checking in…" while the request is out
//   #checkin-back            back to the code screen
//   #checkin-card            the staff's card, data-color = green | yellow | red,
//                            data-checkin-id = the recorded checkin_id
//   #checkin-card-title      its heading (focused when it appears)
//   #checkin-band            the band; #checkin-icon (<use href="#icon-<color>">),
//                            #checkin-color-text (the colour in words)
//   #checkin-place           the place's name      #checkin-holder   the masked name
//   #checkin-at              the check-in's time (server_time)
//   #checkin-advice          what to do, in words for the colour
//   #checkin-clock           live clock (<time datetime>), #checkin-date, #checkin-ticker-mark
//   #checkin-done            close the card, back to the code screen
import { ApiError, callApi, NetworkError, randomId } from "../common/api.js";
import { serverNow } from "../common/clock.js";
import { bind, currentLang, msg, onLanguageChange, render } from "../common/i18n.js";
import { CameraReader } from "./camera.js";

const PREFIX = "PP1:";
const MAX_CODE = 800; // the service refuses a longer venue code before decoding it
const FRAGMENT = "checkin";
const TICK_MS = 250;
const SWEEP_MS = 4000;
const COLORS = ["green", "yellow", "red"];
const WORDS = { green: msg("color.green"), yellow: msg("color.yellow"), red: msg("color.red") };
const ADVICE = { green: msg("advice.green"), yellow: msg("advice.yellow"), red: msg("advice.red") };
const CAMERA_NOTES = {
  starting: msg("checkin.camera.starting"),
  scanning: msg("checkin.camera.scanning"),
  stopped: msg("checkin.camera.stopped"),
  denied: msg("checkin.camera.denied"),
  unavailable: msg("checkin.camera.unavailable"),
  "no-decoder": msg("checkin.camera.no_decoder"),
};
const PROBLEMS = {
  "venue-code-invalid": msg("checkin.error.invalid"),
  "unknown-venue": msg("checkin.error.unknown"),
  "venue-code-revoked": msg("checkin.error.revoked"),
  "venue-code-expired": msg("checkin.error.expired"),
  "no-declaration": msg("checkin.error.no_declaration"),
  network: msg("checkin.error.network"),
  busy: msg("checkin.error.busy"),
  failed: msg("checkin.error.failed"),
};
const RETRYABLE = new Set(["network", "busy", "failed"]);

function byId(id) {
  return document.getElementById(id);
}

/**
 * The venue code in a text read from a QR or pasted: the code itself ("PP1:…", surrounding
 * white space dropped), or a link to this page carrying it in its fragment; else null.
 */
export function venueCodeOf(text) {
  const trimmed = String(text || "").trim();
  if (!trimmed.startsWith(PREFIX)) {
    const hash = trimmed.indexOf("#");
    const linked = hash >= 0 ? codeFromFragment(trimmed.slice(hash)) : null;
    return linked !== null && linked.startsWith(PREFIX) ? venueCodeOf(linked) : null;
  }
  return trimmed.length <= MAX_CODE ? trimmed : null;
}

/**
 * The text of "checkin=" in a URL fragment ("#checkin=<percent-encoded code>"), "" when it
 * cannot be decoded, null when the fragment names no check-in. Not yet judged: venueCodeOf().
 */
export function codeFromFragment(hash) {
  const body = String(hash || "").replace(/^#/, "");
  for (const part of body.split("&")) {
    const eq = part.indexOf("=");
    if (eq < 0 || part.slice(0, eq) !== FRAGMENT) continue;
    try {
      // Base45 holds "+" and " ": only percent-escapes are undone, "+" stays a plus
      return decodeURIComponent(part.slice(eq + 1));
    } catch {
      return "";
    }
  }
  return null;
}

/** Take the check-in text out of the address bar's fragment (read once, then removed); null
 * when the fragment names none. */
export function takeFragmentCode() {
  const text = codeFromFragment(location.hash);
  if (text !== null) history.replaceState(null, "", location.pathname + location.search);
  return text;
}

/** The problem slug of an API refusal (the last segment of its `type`), or null. */
function slugOf(error) {
  const type = error.problem && typeof error.problem.type === "string" ? error.problem.type : "";
  return type.split("/").pop() || null;
}

/**
 * The check-in screen's controller. `token()` resolves to the ID token (or throws when signed
 * out); `show(id)` shows a screen; `announce(text)` speaks politely; `needDeclaration()` opens
 * the declaration form; `signedOut()` on a 401; `done()` returns to the code screen.
 */
export function createCheckinScreen({ token, show, announce, needDeclaration, signedOut, done }) {
  const el = {
    scan: byId("checkin-scan"),
    video: byId("checkin-video"),
    canvas: byId("checkin-canvas"),
    cameraNote: byId("checkin-camera-note"),
    cameraStart: byId("checkin-camera-start"),
    form: byId("checkin-form"),
    code: byId("checkin-code"),
    codeError: byId("checkin-code-error"),
    submit: byId("checkin-submit"),
    error: byId("checkin-error"),
    retry: byId("checkin-retry"),
    declare: byId("checkin-declare"),
    sending: byId("checkin-sending"),
    card: byId("checkin-card"),
    cardTitle: byId("checkin-card-title"),
    icon: byId("checkin-icon"),
    words: byId("checkin-color-text"),
    place: byId("checkin-place"),
    holder: byId("checkin-holder"),
    at: byId("checkin-at"),
    advice: byId("checkin-advice"),
    clock: byId("checkin-clock"),
    date: byId("checkin-date"),
    mark: byId("checkin-ticker-mark"),
  };
  let attempt = null; // {code, checkinId}: what a retry sends again
  let sending = false;
  let result = null; // the check-in answer on the card
  let ticking = null;
  let timeFormat = null;
  let dateFormat = null;

  const camera = new CameraReader(el.video, el.canvas, {
    onCode: (text) => {
      const code = venueCodeOf(text);
      if (code === null) {
        showCodeError(msg("checkin.not_venue"));
        return;
      }
      camera.stop();
      send({ code, checkinId: randomId() });
    },
    onState: (state) => {
      bind(el.cameraNote, CAMERA_NOTES[state] || null);
      el.video.hidden = state !== "scanning" && state !== "starting";
      el.cameraStart.hidden = state === "scanning" || state === "starting";
      if (state === "denied" || state === "unavailable" || state === "no-decoder") {
        el.cameraNote.dataset.state = "problem"; // the manual entry below is the way on
      } else {
        delete el.cameraNote.dataset.state;
      }
    },
  });

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

  function showCodeError(ref) {
    bind(el.codeError, ref);
    el.codeError.hidden = ref === null;
  }

  function showProblem(kind) {
    if (kind === null) {
      bind(el.error, null);
      el.error.hidden = true;
      delete el.error.dataset.problem;
      el.retry.hidden = true;
      el.declare.hidden = true;
      return;
    }
    el.error.dataset.problem = kind;
    bind(el.error, PROBLEMS[kind]);
    el.error.hidden = false;
    el.retry.hidden = !RETRYABLE.has(kind);
    el.declare.hidden = kind !== "no-declaration";
  }

  function setSending(on) {
    sending = on;
    el.sending.hidden = !on;
    el.submit.disabled = on;
    el.retry.disabled = on;
  }

  function problemKind(error) {
    if (error instanceof NetworkError) return "network";
    const slug = slugOf(error);
    if (slug === "venue-code-revoked") {
      return error.problem.reason === "expired" ? "venue-code-expired" : slug;
    }
    if (Object.prototype.hasOwnProperty.call(PROBLEMS, slug)) return slug;
    if (error.status === 400) return "venue-code-invalid"; // e.g. a text the schema refuses
    if (error.status === 429 || error.status === 503) return "busy";
    return "failed";
  }

  async function send(next) {
    if (sending) return;
    attempt = next;
    showProblem(null);
    showCodeError(null);
    setSending(true);
    let answer;
    try {
      answer = await callApi("POST", "/v1/checkins", {
        token: await token(),
        body: { place_code: attempt.code, checkin_id: attempt.checkinId },
      });
    } catch (error) {
      setSending(false);
      const unsigned = !(error instanceof ApiError) && !(error instanceof NetworkError);
      if ((error instanceof ApiError && error.status === 401) || unsigned) {
        close(); // 401, or no token kept (token() throws): sign in again
        signedOut();
        return;
      }
      const kind = problemKind(error);
      if (!RETRYABLE.has(kind)) attempt = null; // a refused code is not sent again
      showProblem(kind); // role=alert: read out as it appears
      return;
    }
    setSending(false);
    attempt = null;
    showCard(answer);
  }

  function drawClock() {
    const at = serverNow();
    const when = new Date(at);
    el.clock.textContent = timeFormat.format(when);
    el.clock.dateTime = when.toISOString();
    el.date.textContent = dateFormat.format(when);
    const fraction = (((at % SWEEP_MS) + SWEEP_MS) % SWEEP_MS) / SWEEP_MS;
    el.mark.style.setProperty("--sweep", fraction.toFixed(3));
  }

  function drawCard() {
    if (result === null) return;
    const color = result.color;
    el.card.dataset.color = color;
    el.card.dataset.checkinId = result.checkin_id;
    el.icon.setAttribute("href", `#icon-${color}`);
    bind(el.words, WORDS[color]);
    bind(el.advice, ADVICE[color]);
    bind(el.place, msg("checkin.card.place", { name: result.place.name }));
    bind(el.holder, msg("code.holder", { name: result.holder.name }));
    const at = Date.parse(result.server_time);
    const time = Number.isFinite(at) ? timeFormat.format(new Date(at)) : "";
    bind(el.at, msg("checkin.card.at", { time }));
  }

  function showCard(answer) {
    if (!answer || !COLORS.includes(answer.color) || !answer.place || !answer.holder) {
      showProblem("failed");
      return;
    }
    result = answer;
    el.scan.hidden = true;
    el.card.hidden = false;
    document.body.dataset.card = "shown";
    drawCard();
    clearInterval(ticking);
    ticking = setInterval(drawClock, TICK_MS);
    drawClock();
    el.cardTitle.focus();
    announce(
      render(
        msg("announce.checkin", { place: answer.place.name, color: render(WORDS[answer.color]) }),
      ),
    );
  }

  function hideCard() {
    clearInterval(ticking);
    ticking = null;
    result = null;
    el.card.hidden = true;
    el.card.dataset.color = "none";
    delete el.card.dataset.checkinId;
    delete document.body.dataset.card;
    el.scan.hidden = false;
  }

  /**
   * Show the screen. A venue code `text` (from the fragment) is sent at once; without one, or
   * when the text is not a venue code (said so), the camera starts (opening follows a tap or a
   * link, so the permission prompt has a reason on screen).
   */
  function open({ code: text = null } = {}) {
    hideCard();
    showProblem(null);
    showCodeError(null);
    el.code.value = "";
    el.code.removeAttribute("aria-invalid");
    show("screen-checkin");
    const code = text === null ? null : venueCodeOf(text);
    if (code !== null) {
      send({ code, checkinId: randomId() });
      return;
    }
    if (text !== null) showCodeError(msg("checkin.not_venue"));
    camera.start();
  }

  /** Leave the screen: the camera off, the card gone. */
  function close() {
    camera.stop();
    hideCard();
    attempt = null;
  }

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = el.code.value;
    if (!text.trim()) {
      showCodeError(msg("checkin.manual.missing"));
      el.code.setAttribute("aria-invalid", "true");
      el.code.focus();
      return;
    }
    const code = venueCodeOf(text);
    if (code === null) {
      showCodeError(msg("checkin.not_venue"));
      el.code.setAttribute("aria-invalid", "true");
      el.code.focus();
      return;
    }
    el.code.removeAttribute("aria-invalid");
    camera.stop();
    send({ code, checkinId: randomId() });
  });
  el.cameraStart.addEventListener("click", () => {
    showProblem(null);
    camera.start();
  });
  el.retry.addEventListener("click", () => {
    if (attempt !== null) send(attempt); // the same checkin_id: recorded once
  });
  el.declare.addEventListener("click", () => {
    close();
    needDeclaration();
  });
  byId("checkin-back").addEventListener("click", () => {
    close();
    done();
  });
  byId("checkin-done").addEventListener("click", () => {
    close();
    done();
  });

  formats();
  onLanguageChange(() => {
    formats();
    if (result !== null) {
      drawCard();
      drawClock();
    }
  });
  return { open, close };
}
