-- Sends DEPTH requests for the same path in one write (HTTP/1.1 pipelining),
-- so that on one core the server, not wrk, is the bottleneck.
-- usage: wrk -s pipeline.lua URL -- DEPTH
local req
init = function(args)
  local depth = tonumber(args[1]) or 16
  local one = wrk.format(nil, wrk.path)
  local r = {}
  for i = 1, depth do r[i] = one end
  req = table.concat(r)
end
request = function()
  return req
end
