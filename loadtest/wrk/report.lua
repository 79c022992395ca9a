-- Shared by the bench scripts: at the end of a run, print one machine-readable line
--   BENCH-JSON {...}
-- with wrk's own counts and latency percentiles (microseconds), for loadtest/bench.py.

function done(summary, latency, requests)
  local e = summary.errors
  local function pct(p)
    return math.floor(latency:percentile(p))
  end
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    pct(50), pct(90), pct(99), pct(99.9), math.floor(latency.max), math.floor(latency.mean)
  ))
end
