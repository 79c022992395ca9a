// "My data" and "Delete my account" (PIPL Art. 45, 47): the citizen's copy of everything the
// service holds about them (GET /v1/me/data), kept in memory only, summarised as counts per kind
// and downloaded as a JSON file made on the device (a Blob behind an <a download>: the token
// never goes into a URL); and the deletion of their records (DELETE /v1/me) behind a second
// screen that says what goes and what an authority's open ruling keeps, where the citizen types
// a word before the button does anything. The service takes a deletion only with an ID token
// issued within the last few minutes: an older one is answered 401 sign-in-again, and the page
// then signs the citizen in again (signIn() keeps the fragment #delete-account, so the page
// comes back to the confirmation). After a deletion the answer is shown in plain words, the
// token is forgotten on the device (signOut()), and "Done" returns to the sign-in screen.
//
// Element ids (for the browser tests):
//   #nav-mydata              on the code screen: opens the my-data screen
//   #screen-mydata           the screen, data-state = loading | ready | error
//   #mydata-title            its heading (focused on open)
//   #mydata-loading          "Fetching your data…" while the copy is being fetched
//   #mydata-summary          the counts, one <li data-kind data-count> per kind
//   #mydata-error            a failure in plain words (role=alert), data-problem = network |
//                            busy | failed
//   #mydata-retry            fetch the copy again
//   #mydata-download         save the copy as a JSON file
//   #mydata-delete           go to the confirmation screen
//   #mydata-back             back to the code screen
//   #screen-delete           the confirmation screen, data-state = ready | sending | error
//   #delete-title            its heading        #delete-note     "signed in again" note
//   #delete-form             the confirmation: #delete-word (the word to type), #delete-confirm
//   #delete-word-error       the typed word is not the one asked for
//   #delete-error            a failure in plain words (role=alert), data-problem =
//                            sign-in-again | network | busy | failed
//   #delete-signin           sign in again (after sign-in-again), back to this screen
//   #delete-cancel           back to the my-data screen, nothing deleted
//   #screen-deleted          the result, data-erased = true | false
//   #deleted-title           its heading        #deleted-body    what happened, in words
//   #deleted-kept            what an authority's ruling keeps: one <li data-kind data-color>
//   #deleted-done            to the sign-in screen
import { ApiError, NetworkError, callApi } from "../common/api.js";
import { now } from "../common/clock.js";
import { bind, currentLang, msg, onLanguageChange, render, t } from "../common/i18n.js";

export const RETURN_FRAGMENT = "#delete-account";
const KINDS = ["declarations", "overrides", "exposures", "test_results", "cards", "scans"];
const COUNT_WORDS = {
  declarations: msg("mydata.count.declarations"),
  overrides: msg("mydata.count.overrides"),
  exposures: msg("mydata.count.exposures"),
  test_results: msg("mydata.count.test_results"),
  cards: msg("mydata.count.cards"),
  scans: msg("mydata.count.scans"),
};
const COLOR_WORDS = { green: msg("color.green"), yellow: msg("color.yellow"), red: msg("color.red") };
const MYDATA_FAILURES = {
  network: msg("mydata.error.network"),
  busy: msg("mydata.error.busy"),
  failed: msg("mydata.error.failed"),
};
const DELETE_FAILURES = {
  network: msg("delete.error.network"),
  busy: msg("delete.error.busy"),
  failed: msg("delete.error.failed"),
};
const KEPT_WORDS = { override: msg("deleted.kept.override"), exposure: msg("deleted.kept.exposure") };

function byId(id) {
  return document.getElementById(id);
}

/** The problem slug of an API refusal (the last segment of its `type`), or null. */
function slugOf(error) {
  const type = error.problem && typeof error.problem.type === "string" ? error.problem.type : "";
  return type.split("/").pop() || null;
}

/** True (and the fragment removed) when the page comes back from a sign-in asked for by the
 * confirmation screen. */
export function takeDeleteReturn() {
  if (location.hash !== RETURN_FRAGMENT) return false;
  history.replaceState(null, "", location.pathname + location.search);
  return true;
}

/**
 * The controller of the my-data, confirmation and result screens. `token()` resolves to the ID
 * token (or throws when signed out); `show(id)` shows a screen; `announce(text)` speaks
 * politely; `back()` returns to the code screen; `signedOut()` on a plain 401 (an expired
 * token); `signIn()` leaves for the identity provider; `erased()` forgets the signed-in state on
 * the device (the token, the kept pass) once the deletion is done; `done()` shows sign-in.
 */
export function createMyData({ token, show, announce, back, signedOut, signIn, erased, done }) {
  const el = {
    mydata: byId("screen-mydata"),
    loading: byId("mydata-loading"),
    summary: byId("mydata-summary"),
    error: byId("mydata-error"),
    retry: byId("mydata-retry"),
    download: byId("mydata-download"),
    toDelete: byId("mydata-delete"),
    mydataBack: byId("mydata-back"),
    confirm: byId("screen-delete"),
    note: byId("delete-note"),
    form: byId("delete-form"),
    word: byId("delete-word"),
    wordLabel: byId("delete-word-label"),
    wordError: byId("delete-word-error"),
    send: byId("delete-confirm"),
    deleteError: byId("delete-error"),
    signInAgain: byId("delete-signin"),
    cancel: byId("delete-cancel"),
    result: byId("screen-deleted"),
    resultBody: byId("deleted-body"),
    kept: byId("deleted-kept"),
    keptTitle: byId("deleted-kept-title"),
    finished: byId("deleted-done"),
  };
  let copy = null; // the last GET /v1/me/data answer, in memory only
  let kept = [];
  let dateFormat = null;

  function formats() {
    dateFormat = new Intl.DateTimeFormat(currentLang(), {
      year: "numeric",
      month: "long",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    });
  }

  /** {slug, ref} of a failure, its words taken from `words` (network, busy, failed). */
  function failure(words, error) {
    if (error instanceof NetworkError) return { slug: "network", ref: words.network };
    if (error instanceof ApiError && (error.status === 429 || error.status === 503)) {
      return { slug: "busy", ref: words.busy };
    }
    return { slug: "failed", ref: words.failed };
  }

  // --- my data ---------------------------------------------------------------------------------

  function drawSummary() {
    el.summary.replaceChildren();
    if (copy === null) return;
    const status = copy.status && copy.status.color ? COLOR_WORDS[copy.status.color] : null;
    const statusItem = document.createElement("li");
    statusItem.dataset.kind = "status";
    statusItem.textContent = t("mydata.status", {
      color: status ? render(status) : t("mydata.status.none"),
    });
    el.summary.append(statusItem);
    for (const kind of KINDS) {
      const count = Array.isArray(copy[kind]) ? copy[kind].length : 0;
      const item = document.createElement("li");
      item.dataset.kind = kind;
      item.dataset.count = String(count);
      item.textContent = t("mydata.count", { what: render(COUNT_WORDS[kind]), count });
      el.summary.append(item);
    }
  }

  function setMyDataState(state, problem = null) {
    el.mydata.dataset.state = state;
    el.loading.hidden = state !== "loading";
    el.summary.hidden = state !== "ready";
    el.download.disabled = state !== "ready";
    el.error.hidden = problem === null;
    el.retry.hidden = problem === null;
    if (problem === null) {
      bind(el.error, null);
      delete el.error.dataset.problem;
    } else {
      el.error.dataset.problem = problem.slug;
      bind(el.error, problem.ref);
    }
  }

  async function fetchCopy() {
    copy = null;
    drawSummary();
    setMyDataState("loading");
    try {
      copy = await callApi("GET", "/v1/me/data", { token: await token() });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        signedOut();
        return;
      }
      setMyDataState("error", failure(MYDATA_FAILURES, error));
      return;
    }
    drawSummary();
    setMyDataState("ready");
    announce(t("mydata.ready"));
  }

  function openMyData() {
    show("screen-mydata");
    fetchCopy();
  }

  function saveCopy() {
    if (copy === null) return;
    const blob = new Blob([JSON.stringify(copy, null, 2)], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = `passcode-my-data-${new Date(now()).toISOString().slice(0, 10)}.json`;
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    // the browser has taken the file once the click's task ends
    setTimeout(() => URL.revokeObjectURL(url), 0);
    announce(t("mydata.saved"));
  }

  // --- the confirmation --------------------------------------------------------------------------

  function drawWordLabel() {
    bind(el.wordLabel, msg("delete.word.label", { word: t("delete.word") }));
  }

  function showDeleteError(problem) {
    el.deleteError.hidden = problem === null;
    el.signInAgain.hidden = problem === null || problem.slug !== "sign-in-again";
    el.send.hidden = !el.signInAgain.hidden; // the same token would be refused again
    if (problem === null) {
      bind(el.deleteError, null);
      delete el.deleteError.dataset.problem;
      return;
    }
    el.deleteError.dataset.problem = problem.slug;
    bind(el.deleteError, problem.ref);
  }

  function showWordError(ref) {
    el.wordError.hidden = ref === null;
    bind(el.wordError, ref);
    if (ref === null) el.word.removeAttribute("aria-invalid");
    else el.word.setAttribute("aria-invalid", "true");
  }

  function openDelete({ signedInAgain = false } = {}) {
    el.form.reset();
    showWordError(null);
    showDeleteError(null);
    el.note.hidden = !signedInAgain;
    bind(el.note, signedInAgain ? msg("delete.signed_in_again") : null);
    el.confirm.dataset.state = "ready";
    show("screen-delete");
  }

  function typedWord() {
    return el.word.value.trim().toLowerCase() === t("delete.word").trim().toLowerCase();
  }

  async function erase() {
    el.send.disabled = true;
    el.confirm.dataset.state = "sending";
    el.form.setAttribute("aria-busy", "true");
    let answer;
    try {
      answer = await callApi("DELETE", "/v1/me", { token: await token() });
    } catch (error) {
      el.confirm.dataset.state = "error";
      if (error instanceof ApiError && error.status === 401 && slugOf(error) === "sign-in-again") {
        showDeleteError({ slug: "sign-in-again", ref: msg("delete.error.sign_in_again") });
        el.signInAgain.focus();
      } else if (error instanceof ApiError && error.status === 401) {
        signedOut();
      } else {
        showDeleteError(failure(DELETE_FAILURES, error));
      }
      return;
    } finally {
      el.send.disabled = false;
      el.form.removeAttribute("aria-busy");
    }
    await erased(); // forgets the copy and the kept result too: the answer is read after it
    kept = Array.isArray(answer.kept) ? answer.kept : [];
    drawResult(answer.erased === true);
    show("screen-deleted");
    announce(render(answer.erased === true ? msg("deleted.title.all") : msg("deleted.title.kept")));
  }

  // --- the result ----------------------------------------------------------------------------------

  function drawResult(all) {
    el.result.dataset.erased = String(all);
    bind(byId("deleted-title"), all ? msg("deleted.title.all") : msg("deleted.title.kept"));
    bind(el.resultBody, all ? msg("deleted.body.all") : msg("deleted.body.kept"));
    el.keptTitle.hidden = kept.length === 0;
    el.kept.hidden = kept.length === 0;
    drawKept();
  }

  function drawKept() {
    el.kept.replaceChildren();
    for (const ruling of kept) {
      const item = document.createElement("li");
      item.dataset.kind = ruling.kind;
      item.dataset.color = ruling.color;
      const color = COLOR_WORDS[ruling.color] ? render(COLOR_WORDS[ruling.color]) : ruling.color;
      const what = KEPT_WORDS[ruling.kind] ? render(KEPT_WORDS[ruling.kind]) : ruling.kind;
      const until =
        ruling.until === null
          ? t("deleted.kept.until_ended")
          : t("deleted.kept.until", { time: dateFormat.format(new Date(Date.parse(ruling.until))) });
      item.textContent = t("deleted.kept.item", { what, color, reason: ruling.reason, until });
      el.kept.append(item);
    }
  }

  formats();
  drawWordLabel();
  onLanguageChange(() => {
    formats();
    drawWordLabel();
    drawSummary();
    drawKept();
  });
  el.retry.addEventListener("click", fetchCopy);
  el.download.addEventListener("click", saveCopy);
  el.toDelete.addEventListener("click", () => openDelete());
  el.mydataBack.addEventListener("click", () => {
    copy = null;
    drawSummary();
    back();
  });
  el.cancel.addEventListener("click", openMyData);
  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    showDeleteError(null);
    if (!typedWord()) {
      showWordError(msg("delete.word.wrong", { word: t("delete.word") }));
      el.word.focus();
      return;
    }
    showWordError(null);
    erase();
  });
  el.signInAgain.addEventListener("click", async () => {
    el.signInAgain.disabled = true;
    // signIn() comes back to the fragment it finds: this one reopens the confirmation
    history.replaceState(null, "", location.pathname + location.search + RETURN_FRAGMENT);
    try {
      await signIn();
    } catch {
      history.replaceState(null, "", location.pathname + location.search);
      el.signInAgain.disabled = false;
      showDeleteError(failure(DELETE_FAILURES, new NetworkError(null)));
    }
  });
  el.finished.addEventListener("click", () => {
    kept = [];
    drawKept();
    done();
  });
  return {
    open: openMyData,
    openDelete,
    clear: () => {
      copy = null;
      kept = [];
      drawSummary();
    },
  };
}
