-- Mixed load for loadtest/dashboard.sh: redirects over N aliased links
-- (PREFIX0 .. PREFIX{N-1}) picked with a Zipf skew, CREATE_PCT % durable
-- creates (each with its own Idempotency-Key, as a retrying client would
-- send), and MISS_PCT % redirects of codes that do not exist.
-- usage: wrk -s dashboard.lua URL -- N [PREFIX] [S] [CREATE_PCT] [MISS_PCT]
local n, prefix, create_pct, miss_pct
local cdf
local i = 0
local tid = 0

setup = function(thread)
  tid = tid + 1
  thread:set("tid", tid)
end

init = function(args)
  n = tonumber(args[1]) or 300
  prefix = args[2] or "d"
  local s = tonumber(args[3]) or 1.0
  create_pct = tonumber(args[4]) or 5
  miss_pct = tonumber(args[5]) or 1
  local sum = 0
  cdf = {}
  for k = 1, n do
    sum = sum + 1 / (k ^ s)
    cdf[k] = sum
  end
  for k = 1, n do cdf[k] = cdf[k] / sum end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + (tid or 0))
end

local function pick()
  local u, lo, hi = math.random(), 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)  -- wrk's LuaJIT has no //
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  -- Rank r maps to a scattered link so hot links are not neighbours.
  return ((lo - 1) * 7919) % n
end

request = function()
  i = i + 1
  local r = math.random() * 100
  if r < create_pct then
    local body = string.format('{"url":"https://www.example.com/dash/%d/%d/%d"}', tid or 0, i, math.random(1, 1000000000))
    return wrk.format("POST", "/api/v1/links", {
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = string.format("dash-%d-%d-%d", tid or 0, i, math.random(1, 1000000000)),
    }, body)
  elseif r < create_pct + miss_pct then
    return wrk.format("GET", "/nosuch" .. math.random(1, 1000000))
  end
  return wrk.format("GET", "/" .. prefix .. pick())
end
