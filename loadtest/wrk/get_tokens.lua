-- GET the URL's path with a bearer token, cycling through a file of tokens (one per line).
-- Requests are formatted once in init(), so wrk spends no Lua time per request.
--   wrk -s loadtest/wrk/get_tokens.lua <url> -- <tokens file>

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

local requests = {}
local count = 0
local index = 0

function init(args)
  local path = args[1] or error("usage: wrk -s get_tokens.lua <url> -- <tokens file>")
  for line in io.lines(path) do
    if line ~= "" then
      local headers = {}
      for name, value in pairs(wrk.headers) do
        headers[name] = value
      end
      headers["Authorization"] = "Bearer " .. line
      count = count + 1
      requests[count] = wrk.format("GET", nil, headers, nil)
    end
  end
  if count == 0 then
    error("no tokens in " .. path)
  end
end

function request()
  index = index % count + 1
  return requests[index]
end
