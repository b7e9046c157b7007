-- wrk script for benchmarks/studies/tail.py: like loadgen.lua, plus one line per answer in a trace file.
-- args: MANIFEST (lines "CONTENT_TYPE<TAB>BODY_FILE[<TAB>HEADER: VALUE]...") TRACE_FILE.
-- Each request carries its send time (CLOCK_MONOTONIC, us) as its X-Request-Id, which the service echoes,
-- so an answer is matched to its own request with no connection bookkeeping; the trace line is
-- "LATENCY_US<TAB>STATUS<TAB>CLOSE(0|1)<TAB>SENT_US<TAB>SERVER_TIMING". wrk.format per request costs wrk a few us.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } zoo_timespec;
int clock_gettime(int clk_id, zoo_timespec *tp);
]]
local ts = ffi.new("zoo_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- 1: CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

local bodies = {}
local next_i = 0
local out = nil
local lines = 0

function init(args)
  for line in io.lines(args[1]) do
    local fields = {}
    for f in line:gmatch("[^\t]+") do fields[#fields + 1] = f end
    local headers = {["Content-Type"] = fields[1]}
    for k = 3, #fields do
      local name, value = fields[k]:match("^([^:]+):%s*(.*)$")
      headers[name] = value
    end
    local f = assert(io.open(fields[2], "rb"))
    bodies[#bodies + 1] = {headers = headers, body = f:read("*a")}
    f:close()
  end
  next_i = math.random(#bodies) - 1
  out = assert(io.open(args[2], "w"))
end

function request()
  next_i = next_i % #bodies + 1
  local b = bodies[next_i]
  b.headers["X-Request-Id"] = tostring(now_us())
  return wrk.format("POST", wrk.path, b.headers, b.body)
end

local function header(headers, name)
  for k, v in pairs(headers) do
    if k:lower() == name then return v end
  end
  return nil
end

function response(status, headers, body)
  local sent = tonumber(header(headers, "x-request-id") or "")
  local latency = sent and (now_us() - sent) or -1
  local close = (header(headers, "connection") or ""):lower() == "close" and 1 or 0
  out:write(latency, "\t", status, "\t", close, "\t", sent or -1, "\t", header(headers, "server-timing") or "", "\n")
  lines = lines + 1
  if lines % 512 == 0 then out:flush() end
end
