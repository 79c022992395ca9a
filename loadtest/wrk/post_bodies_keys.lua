-- POST application/json bodies, cycling through a file of them (one JSON document per line),
-- each request with the next bearer key of a second file (one per line): the load of many
-- clients, e.g. terminals that each upload their own batches.
-- Requests are formatted once in init(), so wrk spends no Lua time per request.
--   wrk -s loadtest/wrk/post_bodies_keys.lua <url> -- <bodies file> <keys file>

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

local requests = {}
local count = 0
local index = 0

local function lines(path)
  local found = {}
  for line in io.lines(path) do
    if line ~= "" then
      found[#found + 1] = line
    end
  end
  if #found == 0 then
    error("nothing in " .. path)
  end
  return found
end

function init(args)
  local usage = "usage: wrk -s post_bodies_keys.lua <url> -- <bodies file> <keys file>"
  local bodies = lines(args[1] or error(usage))
  local keys = lines(args[2] or error(usage))
  count = math.max(#bodies, #keys)
  for i = 1, count do
    local headers = {}
    for name, value in pairs(wrk.headers) do
      headers[name] = value
    end
    headers["Content-Type"] = "application/json"
    headers["Authorization"] = "Bearer " .. keys[(i - 1) % #keys + 1]
    requests[i] = wrk.format("POST", nil, headers, bodies[(i - 1) % #bodies + 1])
  end
end

function request()
  index = index % count + 1
  return requests[index]
end
