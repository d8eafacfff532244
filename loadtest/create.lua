-- POSTs a create with a unique URL per request.
-- usage: wrk -s create.lua http://127.0.0.1:PORT/api/v1/links
local counter = 0
local tid = 0
local threads = {}

setup = function(thread)
  tid = tid + 1
  thread:set("tid", tid)
  table.insert(threads, thread)
end

request = function()
  counter = counter + 1
  local body = string.format('{"url":"https://www.example.com/load/%d/%d/%d"}', tid or 0, counter, math.random(1, 1000000000))
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end
