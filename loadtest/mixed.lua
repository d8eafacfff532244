-- 90 % redirects of one link, 10 % durable creates.
-- usage: wrk -s mixed.lua URL -- CODE
local code
local i = 0
init = function(args) code = args[1] end
request = function()
  i = i + 1
  if i % 10 == 0 then
    local body = string.format('{"url":"https://www.example.com/mixed/%d/%d"}', i, math.random(1, 1000000000))
    return wrk.format("POST", "/api/v1/links", { ["Content-Type"] = "application/json" }, body)
  end
  return wrk.format("GET", "/" .. code)
end
