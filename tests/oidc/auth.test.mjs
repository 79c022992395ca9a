// The pages' sign-in module (passcode/web/common/auth.js) in Node, against a running service in
// dev mode (PASSCODE_BASE_URL): the real authorization code flow with PKCE through the dev
// identity provider's login form. The browser's location, history and sessionStorage are
// stood in for; fetch, crypto.subtle, btoa and atob are Node's own.
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

const BASE = process.env.PASSCODE_BASE_URL;
assert.ok(BASE, "PASSCODE_BASE_URL names the running service");

class MemoryStorage {
  #items = new Map();
  getItem(key) {
    return this.#items.has(key) ? this.#items.get(key) : null;
  }
  setItem(key, value) {
    this.#items.set(key, String(value));
  }
  removeItem(key) {
    this.#items.delete(key);
  }
  clear() {
    this.#items.clear();
  }
  values() {
    return [...this.#items.values()];
  }
}

let href = new URL("/app/", BASE).toString();
let assigned = null;
const visited = []; // every address the page had: no token may ever be in one
globalThis.sessionStorage = new MemoryStorage();
globalThis.location = {
  get href() {
    return href;
  },
  get hash() {
    return new URL(href).hash;
  },
  assign(url) {
    assigned = url;
  },
};
globalThis.history = {
  replaceState(_state, _title, url) {
    href = new URL(url, href).toString();
    visited.push(href);
  },
};
const nodeFetch = globalThis.fetch;
globalThis.fetch = (url, init) => nodeFetch(new URL(url, href), init);

const auth = await import("../../passcode/web/common/auth.js");

function goTo(url) {
  href = url;
  visited.push(url);
}

/** Follow signIn()'s redirect: the login page, posted as `user`; the provider's answer URL. */
async function logIn(user, name = "张小三") {
  assigned = null;
  await auth.signIn();
  assert.ok(assigned, "signIn() leaves for the provider");
  const authorize = new URL(assigned);
  assert.equal(authorize.pathname, "/dev-idp/authorize");
  assert.equal(authorize.searchParams.get("code_challenge_method"), "S256");
  assert.equal(authorize.searchParams.get("response_type"), "code");
  const page = await nodeFetch(authorize);
  assert.equal(page.status, 200);
  const html = await page.text();
  const form = new URLSearchParams();
  for (const [, field, value] of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
    form.set(field, value.replaceAll("&amp;", "&"));
  }
  form.set("user_id", user);
  form.set("name", name);
  const posted = await nodeFetch(new URL("/dev-idp/authorize", BASE), {
    method: "POST",
    body: form,
    redirect: "manual",
  });
  assert.equal(posted.status, 303);
  return posted.headers.get("location");
}

beforeEach(async () => {
  await auth.signOut();
  sessionStorage.clear();
  goTo(new URL("/app/#code-screen", BASE).toString());
});

test("a full sign-in gives an ID token the service accepts, and clears the address bar", async () => {
  const answer = await logIn("authjs-user");
  goTo(answer);
  const user = await auth.handleRedirect();
  assert.equal(user.sub, "authjs-user");
  assert.equal(user.name, "张小三");
  assert.ok(user.expiresAt > Date.now() / 1000);
  const current = new URL(href);
  assert.equal(current.search, "", "code and state are removed from the address bar");
  assert.equal(current.hash, "#code-screen", "the page comes back where it left");
  const token = await auth.getToken();
  assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  const pass = await nodeFetch(new URL("/v1/pass", BASE), {
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(pass.status, 404, "signed in (401 otherwise), no declaration yet");
  for (const url of visited) assert.ok(!url.includes(token), "the token is never in a URL");
  assert.deepEqual(sessionStorage.values(), [token], "only the token is kept once signed in");
});

test("a replayed answer is refused: the pending sign-in was spent", async () => {
  const answer = await logIn("replay-user");
  goTo(answer);
  await auth.handleRedirect();
  await auth.signOut();
  goTo(answer);
  await assert.rejects(auth.handleRedirect(), /state/);
  assert.equal(await auth.getToken(), null);
});

test("an answer whose state is not the pending sign-in's is refused and keeps no token", async () => {
  const answer = new URL(await logIn("state-user"));
  answer.searchParams.set("state", "forged-state");
  goTo(answer.toString());
  await assert.rejects(auth.handleRedirect(), /state/);
  assert.equal(await auth.getToken(), null);
  assert.equal(new URL(href).searchParams.get("code"), null, "the code is cleared anyway");
});

test("an answer from another issuer is refused (RFC 9207)", async () => {
  const answer = new URL(await logIn("issuer-user"));
  answer.searchParams.set("iss", "https://impostor.example");
  goTo(answer.toString());
  await assert.rejects(auth.handleRedirect(), /issuer/);
  assert.equal(await auth.getToken(), null);
});

test("a code the provider refuses to exchange is an error, not a sign-in", async () => {
  const answer = new URL(await logIn("code-user"));
  answer.searchParams.set("code", "not-a-code-the-provider-made");
  goTo(answer.toString());
  await assert.rejects(auth.handleRedirect(), /invalid_grant/);
  assert.equal(await auth.getToken(), null);
});

test("the provider's error answer is reported", async () => {
  await logIn("error-user");
  const state = new URL(assigned).searchParams.get("state");
  goTo(new URL(`/app/?error=access_denied&state=${state}`, BASE).toString());
  await assert.rejects(auth.handleRedirect(), /access_denied/);
});

test("without an answer in the URL, handleRedirect reports the kept user or null", async () => {
  assert.equal(await auth.handleRedirect(), null);
  goTo(await logIn("kept-user"));
  await auth.handleRedirect();
  assert.equal((await auth.handleRedirect()).sub, "kept-user");
});

test("a token about to expire is not handed out, and sign-out forgets the token", async () => {
  goTo(await logIn("expiry-user"));
  await auth.handleRedirect();
  assert.ok(await auth.getToken());
  await auth.signOut();
  assert.equal(await auth.getToken(), null);
  const claims = { sub: "x", exp: Math.floor(Date.now() / 1000) + 30 };
  const payload = Buffer.from(JSON.stringify(claims)).toString("base64url");
  sessionStorage.setItem("passcode.idToken", `e30.${payload}.c2ln`);
  assert.equal(await auth.getToken(), null);
  assert.equal(auth.currentUser(), null);
});

test("each sign-in sends a fresh S256 challenge, state and nonce", async () => {
  await logIn("fresh-user");
  const first = new URL(assigned).searchParams;
  await logIn("fresh-user");
  const second = new URL(assigned).searchParams;
  for (const name of ["code_challenge", "state", "nonce"]) {
    assert.notEqual(first.get(name), second.get(name), name);
  }
  assert.match(second.get("code_challenge"), /^[\w-]{43}$/);
});
