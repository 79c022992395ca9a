// Node tests (node --test) of the scanner page's offline verifier, server clock and scan queue,
// the very modules the page loads. tests/scan/test_offline_verifier.py runs this file with
// PASSCODE_SCAN_VECTORS naming a JSON file of passes the running service signed (and the URL
// and key of a terminal of that service); alone, the tests that need them are skipped.

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { test } from "node:test";

import { ServerClock } from "../../passcode/web/scan/clock.js";
import {
  b45decode,
  b64urlDecode,
  decideOffline,
  importKeySet,
} from "../../passcode/web/scan/offline.js";
import { BATCH_MAX, ScanQueue } from "../../passcode/web/scan/queue.js";

const VECTORS_FILE = process.env.PASSCODE_SCAN_VECTORS;
const vectors = VECTORS_FILE ? JSON.parse(readFileSync(VECTORS_FILE, "utf8")) : null;
const needsService = { skip: vectors ? false : "PASSCODE_SCAN_VECTORS not set (run by pytest)" };

/** A Storage (localStorage's interface) in memory. */
class MemoryStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(k) {
    return this.items.has(k) ? this.items.get(k) : null;
  }
  setItem(k, v) {
    this.items.set(k, String(v));
  }
  removeItem(k) {
    this.items.delete(k);
  }
}

// docs/pass-format.md's test vector: private key 00..1f, yellow, version 7, iat 1760000000.
const DOC_KEYS = {
  keys: [
    {
      kty: "OKP",
      crv: "Ed25519",
      x: "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg",
      kid: "Vkdap1RjR0w",
      alg: "EdDSA",
    },
  ],
};
const DOC_PASS =
  "PC1:RRQT 9P60GO0$+AWKB3UAR098CK:D9080E9EZQEUPC6VC0E0AB81Y8JC8GCAYH8$OC/M873EDS8$46MT8FN0ZBD09FWY0ZBDU7FR-06VCP.C:8DIKD$VDB/DU9E4LE/E73602AEOB027BL6OP94S3N$FIH-5ATQ5O4NEV0FUTMEYUFA66Q5UOJE00179F116%5GHVGA7I  IP5W%ZRQZGQMMQS8OHM/RF: U189T.PSJ5";

const text = (bytes) => new TextDecoder().decode(bytes);

test("Base45 decodes the RFC 9285 examples and refuses the non-canonical GGW, ZZZ and :::", () => {
  assert.equal(text(b45decode("BB8")), "AB");
  assert.equal(text(b45decode("%69 VD92EX0")), "Hello!!");
  assert.equal(text(b45decode("UJCLQE7W581")), "base-45");
  assert.equal(text(b45decode("QED8WEX0")), "ietf!");
  for (const bad of ["GGW", "ZZZ", ":::", "A", "abc", "BB8é"]) {
    assert.throws(() => b45decode(bad), /base45/, bad);
  }
});

test("base64url is read only in its canonical unpadded spelling", () => {
  assert.deepEqual([...b64urlDecode("AQI")], [1, 2]);
  assert.equal(b64urlDecode("AQJ"), null); // non-zero leftover bits: a second spelling
  assert.equal(b64urlDecode("AQI="), null);
  assert.equal(b64urlDecode("A+I"), null);
});

test("the documented test vector verifies with its key: yellow is a deny, inside the window only", async () => {
  const keys = await importKeySet(DOC_KEYS);
  const inside = await decideOffline(DOC_PASS, keys, 1760000030);
  assert.deepEqual(
    [inside.decision, inside.reason, inside.color, inside.kind, inside.offline],
    ["deny", "status_yellow", "yellow", "passcode", true],
  );
  assert.equal((await decideOffline(DOC_PASS, keys, 1760000091)).reason, "expired");
  assert.equal((await decideOffline(DOC_PASS, keys, 1760000090)).reason, "status_yellow");
  assert.equal((await decideOffline(DOC_PASS, keys, 1759999969)).reason, "not_yet_valid");
});

test("a key whose kid is not the SHA-256 prefix of its x is not trusted", async () => {
  const forged = { keys: [{ ...DOC_KEYS.keys[0], kid: "AAAAAAAAAAA" }] };
  const keys = await importKeySet(forged);
  assert.equal(keys.size, 0);
  assert.equal((await decideOffline(DOC_PASS, keys, 1760000030)).reason, "unknown_key");
});

test("texts that are not passes get the service's reasons, foreign ones are left to the service", async () => {
  const keys = await importKeySet(DOC_KEYS);
  const reasons = async (t) => {
    const a = await decideOffline(t, keys, 1760000030);
    return [a.decision, a.reason, a.kind];
  };
  assert.deepEqual(await reasons("hello"), ["invalid", "unsupported", null]);
  assert.deepEqual(await reasons("PC1:GGW"), ["invalid", "malformed", "passcode"]);
  assert.deepEqual(await reasons("PC1:" + "0".repeat(1021)), ["invalid", "malformed", "passcode"]);
  assert.deepEqual(await reasons(DOC_PASS + "00"), ["invalid", "malformed", "passcode"]);
  assert.deepEqual(await reasons("HC1:6BFOXN"), ["unverified", "not_checked_offline", "eu-dcc"]);
  assert.deepEqual(await reasons("shc:/5676"), ["unverified", "not_checked_offline", "shc"]);
});

test("a genuine pass the service signed is admitted offline, by the server's clock", needsService, async () => {
  const keys = await importKeySet(vectors.keys);
  assert.ok(keys.size >= 1);
  const clock = new ServerClock(null, () => vectors.device_now_ms);
  const answer = await decideOffline(vectors.genuine, keys, clock.nowSeconds());
  assert.deepEqual(
    [answer.decision, answer.reason, answer.color, answer.kind],
    ["admit", "ok", "green", "passcode"],
  );
});

test("a service-signed pass of a yellow citizen is a deny offline", needsService, async () => {
  const keys = await importKeySet(vectors.keys);
  const answer = await decideOffline(vectors.yellow, keys, Math.floor(vectors.device_now_ms / 1000));
  assert.deepEqual([answer.decision, answer.reason], ["deny", "status_yellow"]);
});

test("one tampered byte in the payload or the signature of a genuine pass fails", needsService, async () => {
  const keys = await importKeySet(vectors.keys);
  const now = Math.floor(vectors.device_now_ms / 1000);
  for (const tampered of [vectors.tampered_payload, vectors.tampered_signature]) {
    assert.notEqual(tampered, vectors.genuine);
    assert.equal((await decideOffline(tampered, keys, now)).reason, "bad_signature");
  }
});

test("a pass signed by a key not in the service's key set is unknown_key", needsService, async () => {
  const keys = await importKeySet(vectors.keys);
  const answer = await decideOffline(vectors.unknown_kid, keys, Math.floor(vectors.device_now_ms / 1000));
  assert.deepEqual([answer.decision, answer.reason], ["invalid", "unknown_key"]);
});

test("a service-signed pass past its expiry is refused as expired", needsService, async () => {
  const keys = await importKeySet(vectors.keys);
  const answer = await decideOffline(vectors.expired, keys, Math.floor(vectors.device_now_ms / 1000));
  assert.deepEqual([answer.decision, answer.reason], ["invalid", "expired"]);
});

test("a printed card is never admitted offline: it needs the live status", needsService, async () => {
  const keys = await importKeySet(vectors.keys);
  const answer = await decideOffline(vectors.card, keys, Math.floor(vectors.device_now_ms / 1000));
  assert.deepEqual(
    [answer.decision, answer.reason, answer.kind],
    ["unverified", "card_needs_live_status", "card"],
  );
});

test("expiry is judged by the offset learnt from server_time, not the device's own clock", needsService, async () => {
  const keys = await importKeySet(vectors.keys);
  const realNow = vectors.device_now_ms;
  // A phone ten minutes slow: by its own clock the fresh pass is fine...
  const slow = realNow - 10 * 60 * 1000;
  const stored = new MemoryStorage();
  let device = slow;
  const clock = new ServerClock(stored, () => device);
  // ...it learns the offset from a real answer's server_time, read "around" its own clock...
  clock.learn(vectors.server_time, slow - 20, slow + 20);
  assert.ok(Math.abs(clock.offsetMs - 10 * 60 * 1000) < 5000, String(clock.offsetMs));
  assert.equal((await decideOffline(vectors.genuine, keys, clock.nowSeconds())).decision, "admit");
  // ...and when its clock says the pass is still fresh the server's time says it expired.
  device = slow + 2 * 60 * 1000;
  const deviceSays = await decideOffline(vectors.genuine, keys, Math.floor(device / 1000));
  assert.equal(deviceSays.reason, "not_yet_valid"); // by the slow clock, the pass is from the future
  const serverSays = await decideOffline(vectors.genuine, keys, clock.nowSeconds());
  assert.deepEqual([serverSays.decision, serverSays.reason], ["invalid", "expired"]);
  // The offset survives a reload (it is kept in storage) for the next offline check.
  const reloaded = new ServerClock(stored, () => device);
  assert.equal(reloaded.offsetMs, clock.offsetMs);
});

test("the queue keeps one entry per scan id and sends batches of at most 500", async () => {
  const queue = new ScanQueue(new MemoryStorage());
  for (let i = 0; i < 1201; i++) queue.add({ scan_id: `id-${i}`, code: "PC1:X" });
  queue.add({ scan_id: "id-7", code: "PC1:X" });
  assert.equal(queue.size, 1201);
  const sizes = [];
  const outcome = await queue.flush(async (scans) => {
    sizes.push(scans.length);
    return { status: 200, body: { results: scans.map((s) => ({ scan_id: s.scan_id })) } };
  });
  assert.deepEqual(sizes, [BATCH_MAX, BATCH_MAX, 201]);
  assert.equal(outcome.sent, 1201);
  assert.equal(outcome.stopped, null);
  assert.equal(queue.size, 0);
});

test("a scan the service refuses alone leaves the queue; the rest of its batch is sent", async () => {
  const queue = new ScanQueue(new MemoryStorage());
  for (const id of ["a", "bad", "c"]) queue.add({ scan_id: id, code: "PC1:X" });
  const batches = [];
  const outcome = await queue.flush(async (scans) => {
    batches.push(scans.map((s) => s.scan_id).join(","));
    if (scans.some((s) => s.scan_id === "bad")) return { status: 400, body: { errors: ["scans"] } };
    return { status: 200, body: { results: scans.map((s) => ({ scan_id: s.scan_id })) } };
  });
  assert.deepEqual(batches, ["a,bad,c", "a", "bad", "c"]);
  assert.deepEqual([outcome.sent, outcome.refused, outcome.stopped, queue.size], [2, 1, null, 0]);
});

test("a queue keeps every scan when the network fails, the key is refused or the service is busy", async () => {
  const queue = new ScanQueue(new MemoryStorage());
  for (let i = 0; i < 3; i++) queue.add({ scan_id: `id-${i}`, code: "PC1:X" });
  const network = await queue.flush(async () => {
    throw new TypeError("Failed to fetch");
  });
  assert.equal(network.stopped, "network");
  const refused = await queue.flush(async () => ({ status: 401, body: null }));
  assert.equal(refused.stopped, "credential");
  const busy = await queue.flush(async () => ({ status: 503, body: null, retryAfter: 7 }));
  assert.deepEqual([busy.stopped, busy.retryAfter], ["busy", 7]);
  assert.equal(queue.size, 3);
});

test("queued scans reach the running service once each, sent again after a lost answer", needsService, async () => {
  const queue = new ScanQueue(new MemoryStorage());
  const at = new Date(vectors.device_now_ms).toISOString();
  const scans = [
    { scan_id: crypto.randomUUID(), code: vectors.genuine, scanned_at: at },
    { scan_id: crypto.randomUUID(), code: vectors.yellow, scanned_at: at },
    { scan_id: crypto.randomUUID(), code: "not a pass at all" },
  ];
  for (const s of scans) queue.add(s);
  const sent = [];
  let lose = true;
  const post = async (batch) => {
    sent.push(batch.map((s) => s.scan_id));
    const response = await fetch(new URL("/v1/verify/batch", vectors.base_url), {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${vectors.terminal_key}` },
      body: JSON.stringify({ scans: batch }),
    });
    const body = await response.json();
    if (lose) {
      lose = false;
      throw new TypeError("the answer was lost on the way back");
    }
    return { status: response.status, body };
  };
  const lost = await queue.flush(post);
  assert.equal(lost.stopped, "network");
  assert.equal(queue.size, 3);
  // Meanwhile a scan on a device clock three hours fast: the service refuses that terminal
  // time (400 naming it), so it is sent again without it rather than holding the queue back.
  const fast = new Date(vectors.device_now_ms + 3 * 3600 * 1000).toISOString();
  scans.push({ scan_id: crypto.randomUUID(), code: vectors.genuine, scanned_at: fast });
  queue.add(scans[3]);
  const outcome = await queue.flush(post);
  assert.deepEqual([outcome.stopped, outcome.sent, outcome.refused, queue.size], [null, 4, 0, 0]);
  assert.equal(sent.length, 3); // lost, refused for the fast clock, then answered
  const byId = new Map(outcome.results.map((r) => [r.scan_id, r]));
  assert.deepEqual(
    scans.map((s) => byId.get(s.scan_id)?.decision),
    ["admit", "deny", "invalid", "admit"],
  );
  writeFileSync(vectors.out_file, JSON.stringify({ scan_ids: scans.map((s) => s.scan_id) }));
});
