-- Browser-like redirects behind a trusted proxy: a real User-Agent, a
-- Referer and X-Forwarded-For on every request.
--   wrk -s browsers.lua URL            the same headers every time (hot key)
--   wrk -s browsers.lua URL -- mixed   rotate over 6 agents x 3 referrers x
--                                      200 addresses, so no two requests in
--                                      a row look alike to the capture
local agents = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
  "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
}
local referers = { "https://news.example.com/story/42", "https://t.co/abc", "https://www.example.org/" }
local reqs = {}
init = function(args)
  local mixed = args[1] == "mixed"
  local n = mixed and 3600 or 1
  for i = 1, n do
    local ip = (i % 2 == 0) and ("192.0.2." .. (i % 200)) or ("203.0.113." .. (i % 200))
    reqs[i] = wrk.format("GET", wrk.path, {
      ["User-Agent"] = agents[(i % #agents) + 1],
      ["Referer"] = referers[(i % #referers) + 1],
      ["X-Forwarded-For"] = ip,
    })
  end
end
local at = 0
request = function()
  at = at % #reqs + 1
  return reqs[at]
end
