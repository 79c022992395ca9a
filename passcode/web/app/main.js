// The citizen page: sign in (authorization code + PKCE, ../common/auth.js), declare, show the
// code, check in at a venue (checkin.js: the camera, or /app/#checkin=<code>), see and download
// one's data or delete one's account (mydata.js). One screen is shown at a time; moving to a
// screen moves focus to its heading.
import { handleRedirect, getToken, signIn, signOut } from "../common/auth.js";
import { callApi } from "../common/api.js";
import { bind, currentLang, msg, preferredLang, setLanguage, t } from "../common/i18n.js";
import { createCheckinScreen, takeFragmentCode } from "./checkin.js";
import { createCodeScreen } from "./code.js";
import { createDeclareForm } from "./declare.js";
import { createMyData, takeDeleteReturn } from "./mydata.js";
import { forgetPass } from "./store.js";

const SCREENS = [
  "screen-loading",
  "screen-signin",
  "screen-declare",
  "screen-code",
  "screen-checkin",
  "screen-mydata",
  "screen-delete",
  "screen-deleted",
];

function byId(id) {
  return document.getElementById(id);
}

function show(id, { focus = true } = {}) {
  for (const screen of SCREENS) byId(screen).hidden = screen !== id;
  document.body.dataset.screen = id;
  const heading = byId(id).querySelector("h2");
  if (focus && heading !== null) heading.focus();
}

function announce(text) {
  const region = byId("status-live");
  region.textContent = "";
  // a new text node after a pause is announced even when the words repeat
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

async function token() {
  const value = await getToken();
  if (!value) throw new Error("not signed in");
  return value;
}

function drawLanguageSwitch() {
  const button = byId("lang-switch");
  const other = currentLang() === "zh-CN" ? "en" : "zh-CN";
  button.lang = other;
  button.dataset.lang = other;
}

async function start() {
  await setLanguage(preferredLang());
  drawLanguageSwitch();
  byId("lang-switch").addEventListener("click", async () => {
    await setLanguage(byId("lang-switch").dataset.lang);
    drawLanguageSwitch();
  });

  const forget = async () => {
    code.clear();
    checkin.close();
    mydata.clear();
    forgetPass();
    await signOut();
  };
  const signedOut = async (reason) => {
    await forget();
    bind(byId("signin-note"), reason || null);
    byId("signin-note").hidden = !reason;
    show("screen-signin");
  };
  const code = createCodeScreen({
    fetchPass: async () => callApi("GET", "/v1/pass", { token: await token() }),
    needDeclaration: () => {
      bind(byId("declare-note"), msg("declare.first"));
      byId("declare-note").hidden = false;
      byId("declare-cancel").hidden = true;
      show("screen-declare");
    },
    signedOut: () => signedOut(msg("signin.expired")),
    announce,
  });
  const openDeclare = () => {
    code.stop();
    form.reset();
    byId("declare-note").hidden = true;
    byId("declare-cancel").hidden = false;
    show("screen-declare");
  };
  const checkin = createCheckinScreen({
    token,
    show,
    announce,
    needDeclaration: openDeclare,
    signedOut: () => signedOut(msg("signin.expired")),
    done: () => {
      show("screen-code");
      code.start();
    },
  });
  const checkInAt = (venueCode) => {
    code.stop();
    checkin.open({ code: venueCode });
  };
  const form = createDeclareForm({
    token,
    declared: () => {
      announce(t("declare.done"));
      show("screen-code");
      code.start();
    },
    signedOut: () => signedOut(msg("signin.expired")),
  });

  const mydata = createMyData({
    token,
    show,
    announce,
    back: () => {
      show("screen-code");
      code.start();
    },
    signedOut: () => signedOut(msg("signin.expired")),
    signIn,
    erased: forget,
    done: () => {
      bind(byId("signin-note"), null);
      byId("signin-note").hidden = true;
      show("screen-signin");
    },
  });

  byId("signin-button").addEventListener("click", async () => {
    byId("signin-button").disabled = true;
    try {
      await signIn();
    } catch {
      bind(byId("signin-note"), msg("signin.failed"));
      byId("signin-note").hidden = false;
      byId("signin-button").disabled = false;
    }
  });
  byId("signout-button").addEventListener("click", () => signedOut(null));
  byId("nav-declare").addEventListener("click", openDeclare);
  byId("nav-checkin").addEventListener("click", () => checkInAt(null));
  byId("nav-mydata").addEventListener("click", () => {
    code.stop();
    mydata.open();
  });
  byId("declare-cancel").addEventListener("click", () => {
    show("screen-code");
    code.start();
  });

  try {
    await handleRedirect();
  } catch {
    bind(byId("signin-note"), msg("signin.failed"));
    byId("signin-note").hidden = false;
    show("screen-signin");
    return;
  }
  let signedIn = false;
  try {
    signedIn = Boolean(await getToken());
  } catch {
    signedIn = false;
  }
  if (!signedIn) {
    // a #checkin= fragment stays in the address bar: signIn() comes back to it
    show("screen-signin", { focus: false });
    return;
  }
  // A venue link opened while the page is open (a second poster, another tab's link).
  window.addEventListener("hashchange", () => {
    const venueCode = takeFragmentCode();
    if (venueCode !== null) checkInAt(venueCode);
  });
  // Back from the sign-in the confirmation asked for (a deletion needs a recent one).
  if (takeDeleteReturn()) {
    mydata.openDelete({ signedInAgain: true });
    return;
  }
  const venueCode = takeFragmentCode();
  if (venueCode !== null) {
    checkInAt(venueCode);
    return;
  }
  // The kept pass at once (offline, or a slow network), then the fresh one; 404: declare first.
  show("screen-code", { focus: false });
  code.start();
}

start();
