-- Redirects of one link, with one request in EVERY a durable create
-- (default 10: 90 % redirects, 10 % creates; 0: redirects only, the
-- same client's pure-redirect baseline).
-- usage: wrk -s mixed.lua URL -- CODE [EVERY]
local code
local every
local i = 0
init = function(args)
  code = args[1]
  every = tonumber(args[2]) or 10
end
request = function()
  i = i + 1
  if every > 0 and i % every == 0 then
    local body = string.format('{"url":"https://www.example.com/mixed/%d/%d"}', i, math.random(1, 1000000000))
    return wrk.format("POST", "/api/v1/links", { ["Content-Type"] = "application/json" }, body)
  end
  return wrk.format("GET", "/" .. code)
end
