-- wrk script for the picker benchmark: tiny non-streamed chat completions (max_tokens 1), each with
-- its own user text, optionally paced: each connection waits on average THINK_MS after an answer
-- before its next request. The wait is drawn from an exponential distribution: with a fixed wait, the
-- connections, which wrk starts together, stay in step and send their requests in bursts of one per
-- connection, and latency measures the burst's queue. done() prints one JSON line the harness reads.
local think_ms = tonumber(os.getenv("THINK_MS") or "0")
local counter = 0

wrk.method = "POST"
wrk.headers["content-type"] = "application/json"

function request()
  counter = counter + 1
  local body = string.format(
    '{"model":"m","messages":[{"role":"user","content":"request %06d"}],"max_tokens":1}', counter % 1000000)
  return wrk.format(nil, "/v1/chat/completions", nil, body)
end

if think_ms > 0 then
  function setup(thread)
    thread:set("seed", math.random(1, 2147483647))
  end

  function init(args)
    math.randomseed(seed or os.time())
  end

  function delay()
    return -think_ms * math.log(1 - math.random())
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_status":%d,"errors_timeout":%d,"latency_ms_p50":%.3f,"latency_ms_p90":%.3f,"latency_ms_p99":%.3f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
