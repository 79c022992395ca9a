// The scanner's offline verifier: a PC1 pass (docs/pass-format.md, DESIGN §2) checked on the
// device when the service cannot be reached. It mirrors passcode/domain/passfmt.py: the same
// strict Base45, the same fixed COSE_Sign1 layout, the same order of checks and so the same
// reason codes, with Ed25519 done by WebCrypto against the cached GET /v1/keys JWK Set. It
// imports nothing and touches no global but `crypto.subtle`, so Node's test runner loads it as is.

export const PREFIX = "PC1:";
export const MAX_TEXT = 1024; // as the service: a real pass is ~250 characters
export const DEFAULT_LEEWAY = 30; // seconds; the service's default PASSCODE_CLOCK_SKEW

const ALG_EDDSA = -8;
const KID_LEN = 8;
const SUBJECT_LEN = 16;
const MIN_CTI_LEN = 8;
const MIN_CARD_LEN = 8;
const MAX_CARD_LEN = 32;
const CLAIM = { iss: 1, sub: 2, exp: 4, iat: 6, cti: 7, status: -70001, card: -70010 };
const COLORS = { 1: "green", 2: "yellow", 3: "red" };
const MAX_DEPTH = 16; // the claims are one flat map; anything deeper is not ours
const MAX_ITEMS = 1024; // CBOR items per decode: bounds the work on hostile bytes

/** A code that is not a valid pass; `reason` is the service's reason code for it. */
export class PassError extends Error {
  constructor(reason, detail) {
    super(`${reason}: ${detail}`);
    this.name = "PassError";
    this.reason = reason;
    this.detail = detail;
  }
}

const malformed = (detail) => new PassError("malformed", detail);

// --- Base45 (RFC 9285) ------------------------------------------------------------------------

const B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
const B45_VALUES = new Map([...B45].map((c, i) => [c, i]));

/** Canonical Base45 only: a group above 65535 (a pair above 255) is refused, because a lax
 * decoder would wrap it and read a second spelling of the same pass. */
export function b45decode(text) {
  const vals = [];
  for (const ch of text) {
    const v = B45_VALUES.get(ch);
    if (v === undefined) throw new Error("base45: character outside the alphabet");
    vals.push(v);
  }
  if (vals.length % 3 === 1) throw new Error("base45: length leaves a dangling character");
  const out = new Uint8Array(Math.floor(vals.length / 3) * 2 + (vals.length % 3 === 2 ? 1 : 0));
  let o = 0;
  for (let i = 0; i < vals.length; i += 3) {
    if (i + 2 < vals.length) {
      const n = vals[i] + 45 * vals[i + 1] + 2025 * vals[i + 2];
      if (n > 0xffff) throw new Error("base45: group value above 65535");
      out[o++] = n >> 8;
      out[o++] = n & 0xff;
    } else {
      const n = vals[i] + 45 * vals[i + 1];
      if (n > 0xff) throw new Error("base45: final pair value above 255");
      out[o++] = n;
    }
  }
  return out;
}

// --- base64url (RFC 4648 §5, unpadded, canonical) ----------------------------------------------

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64URL_VALUES = new Map([...B64URL].map((c, i) => [c, i]));

/** Bytes of unpadded base64url, or null unless `text` is the one canonical spelling of them. */
export function b64urlDecode(text) {
  if (typeof text !== "string" || text.length % 4 === 1) return null;
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (const ch of text) {
    const v = B64URL_VALUES.get(ch);
    if (v === undefined) return null;
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  if ((acc & ((1 << bits) - 1)) !== 0) return null; // leftover bits must be zero
  return out;
}

// --- a small strict CBOR reader (RFC 8949) for the header and the claims ------------------------

/** A CBOR float, kept apart from integers (the claims must be integers, not 1.0). */
class CborFloat {
  constructor(value) {
    this.value = value;
  }
}
const UNDEFINED = Symbol("cbor undefined");

/** An IEEE 754 half-precision value (RFC 8949 Appendix D). */
function half(bits) {
  const exp = (bits >> 10) & 0x1f;
  const mant = bits & 0x3ff;
  const sign = bits & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN;
  return sign * (mant + 1024) * 2 ** (exp - 25);
}

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
    this.items = 0;
  }

  need(n) {
    if (this.pos + n > this.bytes.length) throw malformed("CBOR truncated");
  }

  argument(info) {
    if (info < 24) return info;
    const size = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
    if (size === undefined) throw malformed("CBOR indefinite length or reserved value");
    this.need(size);
    const at = this.pos;
    this.pos += size;
    if (size === 1) return this.view.getUint8(at);
    if (size === 2) return this.view.getUint16(at);
    if (size === 4) return this.view.getUint32(at);
    const big = this.view.getBigUint64(at);
    return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
  }

  item(depth) {
    if (depth > MAX_DEPTH) throw malformed("CBOR nested too deep");
    if (++this.items > MAX_ITEMS) throw malformed("CBOR has too many items");
    this.need(1);
    const head = this.bytes[this.pos++];
    const major = head >> 5;
    const info = head & 0x1f;
    if (major === 7) return this.simple(info);
    const arg = this.argument(info);
    switch (major) {
      case 0:
        return arg;
      case 1:
        return typeof arg === "bigint" ? -1n - arg : -1 - arg;
      case 2:
      case 3: {
        if (typeof arg === "bigint" || arg > this.bytes.length - this.pos) {
          throw malformed("CBOR string longer than its message");
        }
        const raw = this.bytes.subarray(this.pos, this.pos + arg);
        this.pos += arg;
        if (major === 2) return raw;
        try {
          return new TextDecoder("utf-8", { fatal: true }).decode(raw);
        } catch {
          throw malformed("CBOR text is not UTF-8");
        }
      }
      case 4: {
        if (typeof arg === "bigint" || arg > this.bytes.length - this.pos) {
          throw malformed("CBOR array longer than its message");
        }
        const out = [];
        for (let i = 0; i < arg; i++) out.push(this.item(depth + 1));
        return out;
      }
      case 5: {
        if (typeof arg === "bigint" || 2 * arg > this.bytes.length - this.pos) {
          throw malformed("CBOR map longer than its message");
        }
        const out = new Map();
        for (let i = 0; i < arg; i++) {
          const key = this.item(depth + 1);
          if (typeof key !== "number" && typeof key !== "bigint" && typeof key !== "string") {
            throw malformed("CBOR map key is not an integer or text");
          }
          if (out.has(key)) throw malformed("CBOR map repeats a key");
          out.set(key, this.item(depth + 1));
        }
        return out;
      }
      default: // 6: tags have no place in a pass's header or claims
        throw malformed("CBOR tag where none is allowed");
    }
  }

  simple(info) {
    switch (info) {
      case 20:
        return false;
      case 21:
        return true;
      case 22:
        return null;
      case 23:
        return UNDEFINED;
      case 25:
        this.need(2);
        this.pos += 2;
        return new CborFloat(half(this.view.getUint16(this.pos - 2)));
      case 26:
        this.need(4);
        this.pos += 4;
        return new CborFloat(this.view.getFloat32(this.pos - 4));
      case 27:
        this.need(8);
        this.pos += 8;
        return new CborFloat(this.view.getFloat64(this.pos - 8));
      default:
        throw malformed("CBOR simple value not allowed");
    }
  }
}

/** One CBOR item spanning all of `bytes`. */
function decodeExact(bytes, what) {
  const reader = new Reader(bytes);
  let value;
  try {
    value = reader.item(0);
  } catch (err) {
    if (err instanceof PassError) throw malformed(`${what}: ${err.detail}`);
    throw err;
  }
  if (reader.pos !== bytes.length) throw malformed(`${what}: trailing bytes`);
  return value;
}

// --- the COSE_Sign1 envelope (RFC 9052), exactly the service's canonical layout -----------------

/** [content start, end) of the canonically encoded byte string whose head is at `pos`. */
function bstrAt(raw, pos) {
  if (pos >= raw.length) throw malformed("COSE message truncated");
  const head = raw[pos];
  let start;
  let size;
  if (head >= 0x40 && head <= 0x57) {
    start = pos + 1;
    size = head - 0x40;
  } else if (head === 0x58 && pos + 1 < raw.length && raw[pos + 1] >= 24) {
    start = pos + 2;
    size = raw[pos + 1];
  } else if (head === 0x59 && pos + 2 < raw.length && raw[pos + 1] !== 0) {
    start = pos + 3;
    size = (raw[pos + 1] << 8) | raw[pos + 2];
  } else {
    throw malformed("expected a canonically encoded byte string");
  }
  if (start + size > raw.length) throw malformed("COSE message truncated");
  return [start, start + size];
}

const SIG1_HEAD = new Uint8Array([0x84, 0x6a, ...new TextEncoder().encode("Signature1")]);

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Split the message into its kid, Sig_structure bytes, signature and payload. Canonical
 * encoding makes the Sig_structure's byte strings the message's own, so it is sliced out. */
function openEnvelope(raw) {
  if (raw.length < 2 || raw[0] !== 0xd2 || raw[1] !== 0x84) {
    throw malformed("not a tagged COSE_Sign1 (tag 18, array of 4)");
  }
  const [protStart, protEnd] = bstrAt(raw, 2);
  if (protEnd >= raw.length || raw[protEnd] !== 0xa0) {
    throw malformed("unprotected header is not an empty map");
  }
  const [payloadStart, payloadEnd] = bstrAt(raw, protEnd + 1);
  const [sigStart, sigEnd] = bstrAt(raw, payloadEnd);
  if (sigEnd !== raw.length) throw malformed("trailing data after COSE_Sign1");

  const header = decodeExact(raw.subarray(protStart, protEnd), "protected header");
  if (!(header instanceof Map)) throw malformed("protected header is not a map");
  const alg = header.get(1);
  if (alg === undefined) throw malformed("no alg in protected header");
  if (alg !== ALG_EDDSA || header.has(2)) {
    throw new PassError("unsupported", "alg (or crit) not supported");
  }
  const kid = header.get(4);
  if (!(kid instanceof Uint8Array) || kid.length !== KID_LEN) {
    throw malformed("kid missing or not 8 bytes");
  }
  const toBeSigned = concat(
    SIG1_HEAD,
    raw.subarray(2, protEnd),
    new Uint8Array([0x40]),
    raw.subarray(protEnd + 1, payloadEnd),
  );
  return {
    kid,
    toBeSigned,
    signature: raw.subarray(sigStart, sigEnd),
    payload: raw.subarray(payloadStart, payloadEnd),
  };
}

// --- the claims (CWT, RFC 8392) -----------------------------------------------------------------

const isInt = (v) => typeof v === "number" || typeof v === "bigint";

function claim(claims, key, check, what) {
  const value = claims.get(key);
  if (!check(value)) throw malformed(`claim ${key}: missing or not ${what}`);
  return value;
}

function b64urlEncode(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((bytes.length - i) * 8) / 6));
    for (let k = 0; k < chars; k++) out += B64URL[(n >> (18 - 6 * k)) & 63];
  }
  return out;
}

/** The claims; unknown ones are ignored (CWT convention), known ones strictly typed. */
function parseClaims(payload) {
  const claims = decodeExact(payload, "payload");
  if (!(claims instanceof Map)) throw malformed("payload is not a map");
  const sub = claim(claims, CLAIM.sub, (v) => typeof v === "string", "text");
  const subject = sub.length === 22 ? b64urlDecode(sub) : null;
  if (subject === null || subject.length !== SUBJECT_LEN) {
    throw malformed("sub is not the text of a 16-byte subject id");
  }
  const cti = claim(claims, CLAIM.cti, (v) => v instanceof Uint8Array, "bytes");
  if (cti.length < MIN_CTI_LEN) throw malformed("cti shorter than 8 bytes");
  const status = claim(claims, CLAIM.status, Array.isArray, "an array");
  if (status.length !== 2 || !isInt(status[0]) || !isInt(status[1])) {
    throw malformed("status claim is not [colour, version]");
  }
  const color = COLORS[Number(status[0])];
  if (color === undefined || typeof status[0] === "bigint") {
    throw malformed(`unknown colour code ${status[0]}`);
  }
  if (status[1] < 0) throw malformed("negative status version");
  const card = claims.get(CLAIM.card); // a CBOR null or undefined is a malformed card, not none
  if (
    claims.has(CLAIM.card) &&
    !(card instanceof Uint8Array && card.length >= MIN_CARD_LEN && card.length <= MAX_CARD_LEN)
  ) {
    throw malformed(`card claim is not ${MIN_CARD_LEN} to ${MAX_CARD_LEN} bytes`);
  }
  return {
    issuer: claim(claims, CLAIM.iss, (v) => typeof v === "string", "text"),
    subject: sub,
    issuedAt: Number(claim(claims, CLAIM.iat, isInt, "an integer")),
    expiresAt: Number(claim(claims, CLAIM.exp, isInt, "an integer")),
    tokenId: b64urlEncode(cti),
    color,
    version: Number(status[1]),
    card: claims.has(CLAIM.card),
  };
}

// --- keys -----------------------------------------------------------------------------------------

/** The verification keys of a GET /v1/keys JWK Set as a Map of kid (base64url) → CryptoKey.
 * Keys that are not Ed25519, or whose kid is not the first 8 bytes of SHA-256 of the key
 * (DESIGN §1), are left out: a pass naming them is then `unknown_key`. */
export async function importKeySet(jwks, subtle = globalThis.crypto.subtle) {
  const keys = new Map();
  const list = jwks && Array.isArray(jwks.keys) ? jwks.keys : [];
  for (const jwk of list) {
    if (!jwk || jwk.kty !== "OKP" || jwk.crv !== "Ed25519") continue;
    const x = b64urlDecode(jwk.x);
    const kid = b64urlDecode(jwk.kid);
    if (x === null || x.length !== 32 || kid === null || kid.length !== KID_LEN) continue;
    const digest = new Uint8Array(await subtle.digest("SHA-256", x));
    if (!digest.subarray(0, KID_LEN).every((b, i) => b === kid[i])) continue;
    // Only kty/crv/x go to importKey: browsers differ on whether `alg: "EdDSA"` is acceptable.
    const key = await subtle.importKey(
      "jwk",
      { kty: "OKP", crv: "Ed25519", x: jwk.x },
      { name: "Ed25519" },
      false,
      ["verify"],
    );
    keys.set(jwk.kid, key);
  }
  return keys;
}

// --- verifying --------------------------------------------------------------------------------------

/** The claims of a genuine pass (nothing about its time window yet), or a PassError. The order
 * fixes the reason, as on the service: kind, envelope, key, signature, then the claims. */
export async function authenticatePass(text, keys, subtle = globalThis.crypto.subtle) {
  if (typeof text !== "string" || !text.startsWith(PREFIX)) {
    throw new PassError("unsupported", "not a PC1 pass");
  }
  if (text.length > MAX_TEXT) throw malformed("too long");
  let raw;
  try {
    raw = b45decode(text.slice(PREFIX.length));
  } catch (err) {
    throw malformed(err.message);
  }
  const { kid, toBeSigned, signature, payload } = openEnvelope(raw);
  const kidText = b64urlEncode(kid);
  const key = keys.get(kidText);
  if (key === undefined) throw new PassError("unknown_key", `unknown kid ${kidText}`);
  let good = false;
  try {
    good = await subtle.verify({ name: "Ed25519" }, key, signature, toBeSigned);
  } catch {
    good = false; // e.g. a signature of the wrong length
  }
  if (!good) throw new PassError("bad_signature", "signature does not verify");
  return { ...parseClaims(payload), kid: kidText };
}

/** EXPIRED or NOT_YET_VALID when `now` (Unix seconds) is outside the window ± leeway. */
export function checkWindow(claims, now, leeway = DEFAULT_LEEWAY) {
  if (now > claims.expiresAt + leeway) throw new PassError("expired", "pass expired");
  if (claims.issuedAt > now + leeway) throw new PassError("not_yet_valid", "pass issued in the future");
}

/** What kind of code a text is, by its prefix, as the service's answers name it. */
export function kindOf(text) {
  if (typeof text !== "string") return null;
  if (text.startsWith(PREFIX)) return "passcode";
  if (text.startsWith("HC1:")) return "eu-dcc";
  if (text.startsWith("shc:/")) return "shc";
  return null;
}

/**
 * The device's own decision on a scanned text, shaped like a POST /v1/verify answer plus
 * `offline: true`. `now` is the best estimate of the server's time (Unix seconds).
 *
 * - A genuine phone pass inside its window: admit when green at issue, deny when yellow or red
 *   (the live status is not known: the page says so).
 * - A genuine printed card: `unverified` (`card_needs_live_status`). A card lives for months and
 *   its printed colour is the colour at issue, so trusting it offline would admit someone who
 *   has turned red since.
 * - An EU DCC or a SMART Health Card: `unverified` (`not_checked_offline`): the device holds no
 *   trust store; the scan is queued and the service decides when it is sent.
 * - Anything else: `invalid` with the service's reason code.
 */
export async function decideOffline(text, keys, now, leeway = DEFAULT_LEEWAY) {
  const kind = kindOf(text);
  const answer = (decision, reason, color = null, extra = {}) => ({
    decision,
    reason,
    color,
    kind,
    holder: null,
    offline: true,
    ...extra,
  });
  if (kind === "eu-dcc" || kind === "shc") return answer("unverified", "not_checked_offline");
  let claims;
  try {
    claims = await authenticatePass(text, keys);
    checkWindow(claims, now, leeway);
  } catch (err) {
    if (err instanceof PassError) return answer("invalid", err.reason);
    throw err;
  }
  const extra = { expires_at: claims.expiresAt };
  if (claims.card) return { ...answer("unverified", "card_needs_live_status", null, extra), kind: "card" };
  if (claims.color === "green") return answer("admit", "ok", "green", extra);
  return answer("deny", `status_${claims.color}`, claims.color, extra);
}
