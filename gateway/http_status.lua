-- Shapes the transcoded REST answer on its way back to the client.
-- Runs before the transcoder in http_filters, so on the response path it sees the REST answer.

-- The google.rpc.Code that the transcoder maps to each HTTP status; anything else is UNKNOWN.
local GRPC_CODE_FOR_STATUS = {
  [400] = 3,   -- INVALID_ARGUMENT
  [401] = 16,  -- UNAUTHENTICATED
  [403] = 7,   -- PERMISSION_DENIED
  [404] = 5,   -- NOT_FOUND
  [409] = 6,   -- ALREADY_EXISTS
  [413] = 8,   -- RESOURCE_EXHAUSTED
  [429] = 8,   -- RESOURCE_EXHAUSTED
  [501] = 12,  -- UNIMPLEMENTED
  [503] = 14,  -- UNAVAILABLE
}

local JSON_ESCAPES = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}

local function json_string(text)
  local escaped = text:gsub('[%c"\\]', function(c)
    return JSON_ESCAPES[c] or string.format("\\u%04x", c:byte())
  end)
  return '"' .. escaped .. '"'
end

-- The headers of a REST answer that the service put in its content type: parameters
-- `; x-eventmgmt-<header>=<percent-encoded value>` after the real one (service/rest_headers.py).
local HEADER_PARAMETER = "; x-eventmgmt-"

local function percent_decoded(text)
  return (text:gsub("%%(%x%x)", function(hex)
    return string.char(tonumber(hex, 16))
  end))
end

local function move_content_type_headers(headers, content_type)
  local first = content_type:find(HEADER_PARAMETER, 1, true)
  if first == nil then
    return content_type
  end
  for name, value in content_type:sub(first):gmatch("; x%-eventmgmt%-([%w%-]+)=([^;]*)") do
    headers:replace(name, percent_decoded(value))
  end
  content_type = content_type:sub(1, first - 1)
  headers:replace("content-type", content_type)
  return content_type
end

function envoy_on_response(response_handle)
  local headers = response_handle:headers()
  local content_type = headers:get("content-type") or ""
  -- Native gRPC clients pass through this listener too; their answers stay untouched.
  if content_type:find("^application/grpc") then
    return
  end
  content_type = move_content_type_headers(headers, content_type)

  -- The service chooses the REST status (201, ...) through `x-http-code`, in its content type or
  -- its initial metadata. Only a successful gRPC call may use it: when the call failed after
  -- sending metadata, the error status that convert_grpc_status chose wins.
  local http_code = headers:get("x-http-code")
  if http_code ~= nil then
    if headers:get(":status") == "200" then
      headers:replace(":status", http_code)
    end
    headers:remove("x-http-code")
  end
  -- grpc-status, grpc-message, grpc-status-details-bin, grpc-accept-encoding, ... mean nothing
  -- to a REST client. Collected first: removing while iterating is not safe.
  local grpc_headers = {}
  for name, _ in pairs(headers) do
    if name:find("^grpc%-") then
      grpc_headers[#grpc_headers + 1] = name
    end
  end
  for _, name in ipairs(grpc_headers) do
    headers:remove(name)
  end

  -- Envoy's own errors (unknown query parameter, bad query value, ...) are text/plain. The
  -- local_reply_config mappers already turn the usual statuses into JSON; this catches the rest.
  local status = tonumber(headers:get(":status")) or 0
  if status >= 400 and content_type:find("^text/plain") then
    -- Before body(): after it the header handle may no longer be used.
    headers:replace("content-type", "application/json")
    local body = response_handle:body()
    local text = ""
    if body ~= nil then
      text = body:getBytes(0, body:length())
    end
    local json = string.format('{"code":%d,"message":%s}',
      GRPC_CODE_FOR_STATUS[status] or 2, json_string(text))
    if body ~= nil then
      body:setBytes(json)
    end
  end
end
