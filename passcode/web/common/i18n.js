// Messages: every string a page shows comes from /i18n/<lang>.json. Static text is marked in the
// HTML (data-i18n, data-i18n-aria-label); script text is named with t("key") or msg("key")
// and a literal key only (the tests read the scripts for the keys and check both catalogues
// hold each). Switching language re-renders every marked and bound element and sets <html lang>.

const LANGS = ["zh-CN", "en"];
const STORE_KEY = "passcode.lang";
let messages = {};
let current = "zh-CN";
const bound = new Map(); // element -> message reference, re-rendered on a language change
const listeners = [];

export function languages() {
  return LANGS.slice();
}

export function currentLang() {
  return current;
}

/** The language to start in: ?lang=, then the last choice, then the browser's, else zh-CN. */
export function preferredLang() {
  const asked = new URLSearchParams(location.search).get("lang");
  if (LANGS.includes(asked)) return asked;
  try {
    const stored = localStorage.getItem(STORE_KEY);
    if (LANGS.includes(stored)) return stored;
  } catch {
    // storage refused (private mode): fall through to the browser's languages
  }
  for (const tag of navigator.languages || [navigator.language || ""]) {
    const lower = String(tag).toLowerCase();
    if (lower.startsWith("zh")) return "zh-CN";
    if (lower.startsWith("en")) return "en";
  }
  return "zh-CN";
}

function lookup(key, params) {
  const text = Object.prototype.hasOwnProperty.call(messages, key) ? messages[key] : key;
  if (!params) return text;
  return text.replace(/\{([a-z_]+)\}/g, (whole, name) =>
    Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole,
  );
}

/** The message `key` in the current language, `{name}` placeholders filled from `params`. */
export function t(key, params) {
  return lookup(key, params);
}

/** A reference to a message, rendered later (and again on a language change) by bind(). */
export function msg(key, params) {
  return { key, params };
}

/** Show `ref` (from msg()) as the text of `element`, now and after every language change. */
export function bind(element, ref) {
  if (ref === null) {
    bound.delete(element);
    element.textContent = "";
    return;
  }
  bound.set(element, ref);
  element.textContent = lookup(ref.key, ref.params);
}

/** The text of a message reference, in the current language. */
export function render(ref) {
  return lookup(ref.key, ref.params);
}

/** Call `listener()` after each language change (to redraw what is not bound). */
export function onLanguageChange(listener) {
  listeners.push(listener);
}

function applyMarked(root) {
  for (const element of root.querySelectorAll("[data-i18n]")) {
    element.textContent = lookup(element.dataset.i18n);
  }
  for (const element of root.querySelectorAll("[data-i18n-aria-label]")) {
    element.setAttribute("aria-label", lookup(element.dataset.i18nAriaLabel));
  }
  for (const element of root.querySelectorAll("[data-i18n-title]")) {
    element.setAttribute("title", lookup(element.dataset.i18nTitle));
  }
}

/** Load `lang`'s catalogue, set <html lang>, re-render the page; remembered on the device. */
export async function setLanguage(lang) {
  const code = LANGS.includes(lang) ? lang : "zh-CN";
  const response = await fetch(`/i18n/${code}.json`, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`catalogue ${code}: HTTP ${response.status}`);
  messages = await response.json();
  current = code;
  document.documentElement.lang = code;
  try {
    localStorage.setItem(STORE_KEY, code);
  } catch {
    // not remembered: the page still switches
  }
  applyMarked(document);
  for (const [element, ref] of bound) {
    if (element.isConnected) element.textContent = lookup(ref.key, ref.params);
    else bound.delete(element);
  }
  for (const listener of listeners) listener();
}
