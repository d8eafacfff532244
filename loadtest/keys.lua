-- GETs /PREFIX{i} for i drawn uniformly or from a Zipf law over N links
-- (links imported with gen-links.py N 60 PREFIX).
-- usage: wrk -s keys.lua URL -- N uniform|zipf [S] [PREFIX]
local n, mode, prefix
local cdf

local function build_cdf(count, s)
  local c, sum = {}, 0
  for k = 1, count do
    sum = sum + 1 / (k ^ s)
    c[k] = sum
  end
  for k = 1, count do c[k] = c[k] / sum end
  return c
end

init = function(args)
  n = tonumber(args[1]) or 1000000
  mode = args[2] or "uniform"
  prefix = args[4] or "k"
  if mode == "zipf" then cdf = build_cdf(n, tonumber(args[3]) or 1.1) end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

local function pick()
  if mode ~= "zipf" then return math.random(0, n - 1) end
  local u, lo, hi = math.random(), 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  -- Rank r maps to a scattered link so hot links are not neighbours.
  return ((lo - 1) * 7919) % n
end

request = function()
  return wrk.format(nil, "/" .. prefix .. pick())
end
