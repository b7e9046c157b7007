-- wrk script for benchmarks/loadgen.py: cycle through pre-encoded request bodies, report JSON at the end.
-- args: MANIFEST (lines "CONTENT_TYPE<TAB>BODY_FILE[<TAB>NAME: VALUE]", the last an extra header) [AUTHORIZATION]. Requests are formatted once in
-- init, so each request costs wrk a table lookup.
local requests = {}
local next_i = 0

function init(args)
  local headers = {}
  if args[2] and args[2] ~= "" then headers["Authorization"] = args[2] end
  for line in io.lines(args[1]) do
    local ctype, path, extra = line:match("^([^\t]+)\t([^\t]+)\t?(.*)$")
    local name, value = extra:match("^([^:]+):%s*(.*)$")
    if name then headers[name] = value end
    local f = assert(io.open(path, "rb"))
    local body = f:read("*a")
    f:close()
    headers["Content-Type"] = ctype
    requests[#requests + 1] = wrk.format("POST", wrk.path, headers, body)
  end
  next_i = math.random(#requests) - 1
end

function request()
  next_i = next_i % #requests + 1
  return requests[next_i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"wrk": 1, "duration_us": %d, "requests": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
