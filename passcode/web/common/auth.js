// Sign-in with the city's identity provider (统一身份认证): the OAuth 2.0 authorization code
// flow with PKCE (RFC 7636, S256) and OpenID Connect's state and nonce. An ES module, no inline
// script; the pages import it.
//
// API (everything else here is private):
//   await handleRedirect()  On every page load, first. When the URL carries the provider's
//                           answer (?code=&state= or ?error=), checks `state`, exchanges the
//                           code (with the PKCE verifier) at the token endpoint, checks the ID
//                           token's iss, aud, exp and `nonce`, keeps it, and removes the
//                           answer from the address bar. Resolves to the user ({sub, name,
//                           expiresAt} or null); throws an Error when the answer is refused.
//   await signIn()          Leaves the page for the provider's login (GET /v1/web-config says
//                           where). Comes back to the redirect URI, where handleRedirect ends it.
//   await getToken()        The ID token for `Authorization: Bearer`, or null when signed out
//                           or when it expires within a minute (sign in again then).
//   currentUser()           {sub, name, expiresAt} of the kept token, or null.
//   await signOut()         Forgets the token and any sign-in in progress.
//
// Where tokens live: sessionStorage, per tab. It ends with the tab (a shared or lost phone does
// not keep a citizen signed in for days as localStorage would), it is not sent with requests as
// a cookie would be (so no CSRF: the API reads only the Authorization header), and under the
// pages' strict CSP no third-party or inline script runs to read it. The PKCE verifier, state and
// nonce are kept there too, only between signIn() and handleRedirect().
// Tokens never go into a URL: the only secret in one is the provider's own one-time `code` (and
// the PKCE challenge, which is public), removed from the address bar as soon as it is read; the
// exchange sends the code and verifier in a POST body. Nothing here logs a token or a code.

const TOKEN_KEY = "passcode.idToken";
const PENDING_KEY = "passcode.signIn";
const CONFIG_PATH = "/v1/web-config";
const EXPIRY_MARGIN_S = 60; // a token about to expire is not handed out: sign in again
const DEADLINE_MS = 15000;

function base64url(bytes) {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText(bytes = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

async function s256(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

async function fetchWithDeadline(url, init = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), DEADLINE_MS);
  try {
    return await fetch(url, { ...init, signal: controller.signal, credentials: "omit" });
  } finally {
    clearTimeout(timer);
  }
}

async function webConfig() {
  const response = await fetchWithDeadline(CONFIG_PATH, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`sign-in settings unavailable (HTTP ${response.status})`);
  return response.json();
}

/** The claims of a JWT, unverified: the service verifies the signature on every request. */
function claimsOf(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("not a JWT");
  const text = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function nowSeconds() {
  return Date.now() / 1000;
}

function audienceHolds(aud, clientId) {
  return Array.isArray(aud) ? aud.includes(clientId) : aud === clientId;
}

function kept() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return null;
  try {
    const claims = claimsOf(token);
    if (typeof claims.exp !== "number" || claims.exp - EXPIRY_MARGIN_S <= nowSeconds()) {
      sessionStorage.removeItem(TOKEN_KEY);
      return null;
    }
    return { token, claims };
  } catch {
    sessionStorage.removeItem(TOKEN_KEY);
    return null;
  }
}

export async function signIn() {
  const config = await webConfig();
  const verifier = randomText(48);
  const pending = {
    verifier,
    state: randomText(),
    nonce: randomText(),
    config,
    returnTo: location.hash || "",
  };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(config.authorization_endpoint);
  const params = {
    response_type: "code",
    client_id: config.client_id,
    redirect_uri: config.redirect_uri,
    scope: "openid profile",
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: await s256(verifier),
    code_challenge_method: "S256",
  };
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  location.assign(url.toString());
}

function clearAnswerFromUrl(returnTo) {
  const url = new URL(location.href);
  for (const name of ["code", "state", "iss", "error", "error_description", "session_state"]) {
    url.searchParams.delete(name);
  }
  history.replaceState(null, "", url.pathname + url.search + (returnTo || url.hash));
}

export async function handleRedirect() {
  const answer = new URL(location.href).searchParams;
  if (!answer.has("code") && !answer.has("error")) return currentUser();
  const raw = sessionStorage.getItem(PENDING_KEY);
  sessionStorage.removeItem(PENDING_KEY); // one answer per sign-in: a replayed URL finds nothing
  const pending = raw ? JSON.parse(raw) : null;
  clearAnswerFromUrl(pending && pending.returnTo);
  if (pending === null || answer.get("state") !== pending.state) {
    throw new Error("sign-in answer without a matching state: refused");
  }
  if (answer.has("error")) throw new Error(`sign-in refused by the provider: ${answer.get("error")}`);
  const { config } = pending;
  if (answer.has("iss") && answer.get("iss") !== config.issuer) {
    throw new Error("sign-in answer from another issuer: refused"); // RFC 9207
  }
  const response = await fetchWithDeadline(config.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: answer.get("code"),
      redirect_uri: config.redirect_uri,
      client_id: config.client_id,
      code_verifier: pending.verifier,
    }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok || typeof body.id_token !== "string") {
    throw new Error(`code exchange refused (${body.error || `HTTP ${response.status}`})`);
  }
  const claims = claimsOf(body.id_token);
  if (claims.nonce !== pending.nonce) throw new Error("ID token nonce mismatch: refused");
  if (claims.iss !== config.issuer) throw new Error("ID token from another issuer: refused");
  if (!audienceHolds(claims.aud, config.client_id)) throw new Error("ID token for another client");
  if (typeof claims.exp !== "number" || claims.exp <= nowSeconds()) {
    throw new Error("ID token already expired");
  }
  sessionStorage.setItem(TOKEN_KEY, body.id_token);
  return currentUser();
}

export async function getToken() {
  const found = kept();
  return found ? found.token : null;
}

export function currentUser() {
  const found = kept();
  if (!found) return null;
  const { sub, name, exp } = found.claims;
  return { sub, name: typeof name === "string" ? name : "", expiresAt: exp };
}

export async function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(PENDING_KEY);
}
