-- POST application/json bodies, cycling through a file of them (one JSON document per line).
-- Requests are formatted once in init(), so wrk spends no Lua time per request.
--   wrk -s loadtest/wrk/post_bodies.lua [-H 'Authorization: Bearer ...'] <url> -- <bodies file>

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

local requests = {}
local count = 0
local index = 0

function init(args)
  local path = args[1] or error("usage: wrk -s post_bodies.lua <url> -- <bodies file>")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  for line in io.lines(path) do
    if line ~= "" then
      count = count + 1
      requests[count] = wrk.format(nil, nil, nil, line)
    end
  end
  if count == 0 then
    error("no bodies in " .. path)
  end
end

function request()
  index = index % count + 1
  return requests[index]
end
