// The queue of scans made while the service could not be reached, kept on the device and sent
// with POST /v1/verify/batch once it can (DESIGN §3). No scan is lost: a scan is written to
// storage before its result is shown, and leaves it only when the service has answered it
// (200) or refused it for good (a 400 naming it alone). The service records a scan id once,
// so a batch that was sent but whose answer was lost is simply sent again.
//
// Storage is localStorage (any object with getItem/setItem): it is written synchronously, so a
// scan is durable the moment `add` returns, even if the tab is closed right after. It holds a
// few megabytes, thousands of scans; `add` throws when it is full, and the page says so.

export const BATCH_MAX = 500; // the batch endpoint takes at most 500 scans per request
const QUEUE_KEY = "passcode.scan.queue";

export class ScanQueue {
  constructor(storage) {
    this.storage = storage;
  }

  /** Every queued scan, oldest first: `{scan_id, code, scanned_at?}` (a batch item). */
  pending() {
    try {
      const value = JSON.parse(this.storage.getItem(QUEUE_KEY) ?? "[]");
      return Array.isArray(value) ? value : [];
    } catch {
      return [];
    }
  }

  get size() {
    return this.pending().length;
  }

  write(scans) {
    if (scans.length === 0) this.storage.removeItem(QUEUE_KEY);
    else this.storage.setItem(QUEUE_KEY, JSON.stringify(scans));
  }

  /** Queue a scan unless its id is already queued (a retry of the same scan). */
  add(scan) {
    const scans = this.pending();
    if (!scans.some((s) => s.scan_id === scan.scan_id)) {
      scans.push(scan);
      this.write(scans);
    }
  }

  remove(ids) {
    const gone = new Set(ids);
    this.write(this.pending().filter((s) => !gone.has(s.scan_id)));
  }

  /** Drop the `scanned_at` of these scans: the service refuses a terminal time too far from its
   * own (a device clock far off), and the scan is worth more recorded without it than stuck. */
  dropTerminalTime(ids) {
    const which = new Set(ids);
    this.write(
      this.pending().map((s) => {
        if (!which.has(s.scan_id)) return s;
        const { scanned_at: _dropped, ...rest } = s;
        return rest;
      }),
    );
  }

  clear() {
    this.storage.removeItem(QUEUE_KEY);
  }

  /**
   * Send the queue in batches of at most 500 through `post(scans)`, which resolves to
   * `{status, body, retryAfter}` or rejects when the network fails. Resolves to
   * `{sent, refused, results, stopped}`: `stopped` is null when the queue is empty, else why it
   * stopped (`"network"`, `"credential"` for 401/403, `"busy"` for 429/503 with `retryAfter`
   * seconds, `"server"` for anything else), and the scans not yet answered stay queued.
   */
  async flush(post) {
    const outcome = { sent: 0, refused: 0, results: [], stopped: null, retryAfter: null };
    for (let guard = 0; guard < 10000; guard++) {
      const scans = this.pending();
      if (scans.length === 0) return outcome;
      const chunk = scans.slice(0, BATCH_MAX);
      const step = await this.send(chunk, post, outcome);
      if (step !== null) {
        outcome.stopped = step;
        return outcome;
      }
    }
    outcome.stopped = "server";
    return outcome;
  }

  /** One batch; null when it made progress, else why the flush stops. */
  async send(chunk, post, outcome) {
    let answer;
    try {
      answer = await post(chunk);
    } catch {
      return "network";
    }
    const { status, body } = answer;
    if (status === 200 && body && Array.isArray(body.results)) {
      this.remove(chunk.map((s) => s.scan_id));
      outcome.sent += chunk.length;
      outcome.results.push(...body.results);
      return null;
    }
    if (status === 400) {
      const named = badTerminalTimes(body, chunk);
      if (named.length > 0) {
        this.dropTerminalTime(named);
        return null;
      }
      if (chunk.length > 1) {
        // Some item is refused, and the problem does not say which: send them one by one so
        // the others are not held back by it.
        for (const scan of chunk) {
          const step = await this.send([scan], post, outcome);
          if (step !== null) return step;
        }
        return null;
      }
      this.remove([chunk[0].scan_id]);
      outcome.refused += 1;
      return null;
    }
    if (status === 401 || status === 403) return "credential";
    if (status === 429 || status === 503) {
      outcome.retryAfter = answer.retryAfter ?? null;
      return "busy";
    }
    return "server";
  }
}

/** The scan ids whose `scanned_at` a 400 problem names (`scans[<i>].scanned_at`). */
function badTerminalTimes(problem, chunk) {
  const errors = problem && Array.isArray(problem.errors) ? problem.errors : [];
  const ids = [];
  for (const field of errors) {
    const match = /^scans\[(\d+)\]\.scanned_at$/.exec(String(field));
    if (match && chunk[Number(match[1])]?.scanned_at !== undefined) {
      ids.push(chunk[Number(match[1])].scan_id);
    }
  }
  return ids;
}
