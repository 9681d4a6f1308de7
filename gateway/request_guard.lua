-- Checks a REST request before anything else reads it (first in http_filters).
--
-- * Path and query values must be UTF-8 once percent-decoded: the transcoder copies the bytes
--   into protobuf string fields, which the service cannot parse (it would answer 500). A bad
--   value is a 400 naming the field (the path template's variable or the query parameter).
-- * The Host header must be host[:port]: the router sets X-Forwarded-Host from it, over any
--   the client sent (gateway/launcher.py), and the service builds absolute `_links` and
--   `Location` from it.
-- * gRPC control headers (`grpc-timeout`, `grpc-encoding`, ...) and binary `-bin` metadata are
--   the gRPC protocol's business, not a REST client's: a REST client's `grpc-timeout: 1n`
--   would otherwise become the call's deadline (504), a `foo-bin: !!!` a metadata error (500).
--   Native gRPC clients (content-type application/grpc) pass through untouched.
--
-- PATH_TEMPLATES is prepended by the launcher, derived from the google.api.http bindings of the
-- transcoded services: a list of templates, each a list of segments, where a variable segment
-- is {field = "name"} and a literal one is its text.

local function percent_decode(text)
  return (text:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- Well-formed UTF-8 as protobuf checks it: no overlong forms, no surrogates, at most U+10FFFF.
local function is_utf8(text)
  local i, n = 1, #text
  while i <= n do
    local c = text:byte(i)
    if c < 0x80 then
      i = i + 1
    else
      local length, low, high = 0, 0x80, 0xBF
      if c >= 0xC2 and c <= 0xDF then
        length = 2
      elseif c >= 0xE0 and c <= 0xEF then
        length = 3
        if c == 0xE0 then low = 0xA0 elseif c == 0xED then high = 0x9F end
      elseif c >= 0xF0 and c <= 0xF4 then
        length = 4
        if c == 0xF0 then low = 0x90 elseif c == 0xF4 then high = 0x8F end
      else
        return false
      end
      if i + length - 1 > n then
        return false
      end
      local second = text:byte(i + 1)
      if second < low or second > high then
        return false
      end
      for k = i + 2, i + length - 1 do
        local b = text:byte(k)
        if b < 0x80 or b > 0xBF then
          return false
        end
      end
      i = i + length
    end
  end
  return true
end

-- Only bytes >= 0x80, raw or escaped, can make a value invalid: most requests skip the work.
local function may_be_invalid(text)
  return text:find("[\128-\255]") ~= nil or text:find("%%[89A-Fa-f]%x") ~= nil
end

local function split_path(path)
  local segments = {}
  for segment in path:gmatch("[^/]+") do
    segments[#segments + 1] = segment
  end
  return segments
end

-- The template variable at `index` of a path with these segments, or nil when no REST
-- binding has that shape (the route table then answers 404).
local function path_field(segments, index)
  for _, template in ipairs(PATH_TEMPLATES) do
    if #template == #segments then
      local fits = true
      for k, part in ipairs(template) do
        if type(part) == "string" and part ~= segments[k] then
          fits = false
          break
        end
      end
      if fits and type(template[index]) == "table" then
        return template[index].field
      end
    end
  end
  return nil
end

-- Refuses the request with 400. The body is "<field>: <rule>"; the local_reply_config mappers
-- shape it (the service's JSON error with ErrorInfo and BadRequest naming the field, or the
-- device path's {"error": 6, "message"}, docs/errors.md) from the request headers set here.
local function refuse(handle, field, rule)
  -- Header values must be printable ASCII; a field name can hold any byte the client sent.
  local printable = field:gsub("[^\32-\126]", "?")
  local headers = handle:headers()
  headers:replace("x-eventmgmt-refused-field", printable)
  headers:replace("x-eventmgmt-refused-rule", rule)
  handle:respond({[":status"] = "400"}, printable .. ": " .. rule)
end

local NOT_UTF8 = "must be UTF-8 once percent-decoded"

-- The first path or query value that is not UTF-8: its field name, else nil.
local function invalid_field(path)
  local query_start = path:find("?", 1, true)
  local raw_path = query_start and path:sub(1, query_start - 1) or path
  if may_be_invalid(raw_path) then
    local segments = split_path(raw_path)
    for index, segment in ipairs(segments) do
      if not is_utf8(percent_decode(segment)) then
        return path_field(segments, index) or "path"
      end
    end
  end
  if query_start then
    local query = path:sub(query_start + 1)
    if may_be_invalid(query) then
      for pair in query:gmatch("[^&]+") do
        local equals = pair:find("=", 1, true)
        local name = percent_decode(equals and pair:sub(1, equals - 1) or pair)
        local value = equals and percent_decode(pair:sub(equals + 1)) or ""
        if not is_utf8(name) then
          return "query parameter name"
        end
        if not is_utf8(value) then
          return name
        end
      end
    end
  end
  return nil
end

-- host[:port]: a registered name or IPv4 address, or a bracketed IPv6 address.
local function is_authority(authority)
  return authority:find("^[%w%-%._~]+:?%d*$") ~= nil or authority:find("^%[[%x:%.]+%]:?%d*$") ~= nil
end

-- Envoy's own control headers (retries, timeouts, tracing) are for Envoys, not clients; the
-- refusal headers are this guard's note to the local reply mappers.
-- x-eventmgmt-*: the guard's own (refused field and rule) and the gateway token, which the
-- router adds after this filter (launcher._login_headers).
local function untrusted(name)
  return name:find("^x%-envoy%-") ~= nil or name:find("^x%-eventmgmt%-") ~= nil
end

-- gRPC control headers and binary metadata: a REST client's are removed.
local function grpc_control(name)
  return name:find("^grpc%-") ~= nil or name:find("%-bin$") ~= nil
end

-- HTTP allows header names such as "a+b" or "a~b" that gRPC metadata does not: the server's
-- HTTP/2 layer would fail the whole call (INTERNAL) on such a name, so it is a named 400 here.
-- Envoy has lowercased the names already.
local HEADER_NAME_RULE = "a header name may hold only letters, digits, '-', '_' and '.'"

-- Runs once per request, so the common case costs one pass over the headers: each name is
-- tested by its first byte before any pattern (most names start with neither x nor g, nor end
-- in -bin). Envoy refuses changes to the headers while an iteration is open, so the pass only
-- collects; the removals follow it.
function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local content_type = headers:get("content-type") or ""
  local rest = content_type:find("^application/grpc") == nil
  local doomed = nil
  local bad_name = nil
  for name, _ in pairs(headers) do
    local first = name:byte(1)
    local remove = false
    if first == 120 then -- x
      remove = untrusted(name)
    end
    if rest and not remove then
      remove = (first == 103 or name:byte(-1) == 110) and grpc_control(name) -- g..., ...n
      if not remove and bad_name == nil and first ~= 58 and name:find("[^%w%-_%.]") then -- :
        bad_name = "header " .. name
      end
    end
    if remove then
      doomed = doomed or {}
      doomed[#doomed + 1] = name
    end
  end
  if doomed ~= nil then
    for _, name in ipairs(doomed) do
      headers:remove(name)
    end
  end
  if not rest then
    return
  end

  local authority = headers:get(":authority") or ""
  if authority ~= "" and not is_authority(authority) then
    refuse(request_handle, "Host", "must be host or host:port")
    return
  end

  local field = invalid_field(headers:get(":path") or "")
  if field ~= nil then
    refuse(request_handle, field, NOT_UTF8)
    return
  end

  if bad_name ~= nil then
    refuse(request_handle, bad_name, HEADER_NAME_RULE)
  end
end
