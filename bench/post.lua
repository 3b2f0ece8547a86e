-- wrk script for the small JSON POST workload (scripts/bench).
-- Extra request headers come from BENCH_HEADERS, one "name: value" per line.
wrk.method = "POST"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"ping"}],"max_tokens":1}'
wrk.headers["Content-Type"] = "application/json"
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d status_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
