// Calls to the service's API: JSON in and out, the ID token as a bearer credential (never a
// cookie, never in a URL), a deadline on every call, RFC 9457 problem bodies as ApiError.
import { noteServerDate } from "./clock.js";

const DEADLINE_MS = 15000;

/** An answer of the API that is not a success: `status`, and the problem body when one came. */
export class ApiError extends Error {
  constructor(status, problem, headers) {
    super((problem && problem.detail) || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem || null;
    this.retryAfter = Number(headers && headers.get("Retry-After")) || null;
  }
}

/** The service could not be reached (offline, DNS, deadline passed). */
export class NetworkError extends Error {
  constructor(cause) {
    super("network unavailable");
    this.name = "NetworkError";
    this.cause = cause;
  }
}

/**
 * `method path` with `body` (JSON) and the bearer `token`; the parsed JSON answer on 2xx.
 * Throws ApiError (with the problem body) or NetworkError.
 */
export async function callApi(method, path, { token, body, headers } = {}) {
  const sent = { Accept: "application/json", ...(headers || {}) };
  if (token) sent.Authorization = `Bearer ${token}`;
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), DEADLINE_MS);
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      signal: controller.signal,
    });
  } catch (error) {
    throw new NetworkError(error);
  } finally {
    clearTimeout(timer);
  }
  noteServerDate(response.headers.get("Date"));
  const type = response.headers.get("Content-Type") || "";
  let parsed = null;
  if (type.includes("json")) {
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, parsed, response.headers);
  return parsed;
}

/** A fresh random id (an Idempotency-Key, a check-in id). */
export function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
