// The terminal API (DESIGN §3) as the scanner page calls it. The terminal key goes only in the
// Authorization header of same-origin requests: never in a URL (URLs end up in logs, history
// and Referer headers) and never to the console. Every request has a deadline, after which the
// page treats the service as unreachable and checks the pass on the device.

import { now } from "./clock.js";

export const VERIFY_TIMEOUT_MS = 4000; // a guard waits this long at most before the offline check
const BATCH_TIMEOUT_MS = 20000;
const KEYS_TIMEOUT_MS = 8000;

async function call(path, { key, body, method = "POST", timeout, headers = {} }) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeout);
  const sentAt = now();
  try {
    const response = await fetch(path, {
      method,
      headers: {
        Accept: "application/json",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...(key === undefined ? {} : { Authorization: `Bearer ${key}` }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit", // the key is the credential; no cookie rides along
      redirect: "error",
      signal: abort.signal,
    });
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    const retry = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    return {
      status: response.status,
      body: parsed,
      headers: response.headers,
      retryAfter: Number.isFinite(retry) ? retry : null,
      sentAt,
      receivedAt: now(),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** POST /v1/verify; rejects (a TypeError or AbortError) when no answer comes in time. */
export function verify(key, code, scanId) {
  return call("/v1/verify", { key, body: { code, scan_id: scanId }, timeout: VERIFY_TIMEOUT_MS });
}

/** POST /v1/verify/batch with up to 500 queued scans. */
export function verifyBatch(key, scans) {
  return call("/v1/verify/batch", { key, body: { scans }, timeout: BATCH_TIMEOUT_MS });
}

/**
 * Whether the service accepts `key`, without recording a scan: an empty batch is refused by
 * the schema (400) only after the credential was checked (401 unknown, 403 revoked).
 * Resolves to "ok", "unknown", "revoked" or "unreachable".
 */
export async function probeKey(key) {
  try {
    const answer = await call("/v1/verify/batch", {
      key,
      body: { scans: [] },
      timeout: KEYS_TIMEOUT_MS,
    });
    if (answer.status === 401) return "unknown";
    if (answer.status === 403) return "revoked";
    if (answer.status === 400 || answer.status === 200) return "ok";
    return "unreachable";
  } catch {
    return "unreachable";
  }
}

/** GET /v1/keys with the cached ETag; `body` is null on a 304. */
export function fetchKeys(etag) {
  return call("/v1/keys", {
    method: "GET",
    timeout: KEYS_TIMEOUT_MS,
    headers: etag ? { "If-None-Match": etag } : {},
  });
}
