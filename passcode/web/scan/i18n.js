// The scanner page's messages, zh-CN and en, from its own catalogues (messages.<lang>.json in
// this folder; the page's folder is served flat, one file name per request). Every string the
// page shows comes from them; `{name}` placeholders are filled in by `t`.

export const LANGS = ["zh-CN", "en"];
const LANG_KEY = "passcode.scan.lang";

let messages = {};
let current = "en";

/** The language kept on the device, else the browser's (Chinese → zh-CN, else en). */
export function preferredLang(storage) {
  const saved = storage?.getItem(LANG_KEY);
  if (LANGS.includes(saved)) return saved;
  const browser = (navigator.languages?.[0] ?? navigator.language ?? "").toLowerCase();
  return browser.startsWith("zh") ? "zh-CN" : "en";
}

export async function loadLang(lang, storage) {
  const response = await fetch(`/scan/messages.${lang}.json`, { credentials: "omit" });
  if (!response.ok) throw new Error(`catalogue ${lang}: HTTP ${response.status}`);
  messages = await response.json();
  current = lang;
  storage?.setItem(LANG_KEY, lang);
  document.documentElement.lang = lang;
}

export function lang() {
  return current;
}

/** The message `key`, its placeholders filled from `values`; the key itself if missing. */
export function t(key, values = {}) {
  const text = messages[key];
  if (typeof text !== "string") return key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in values ? String(values[name]) : ""));
}

/** Fill every element with a data-i18n attribute. */
export function translatePage(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}
