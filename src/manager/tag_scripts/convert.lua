-- Tag sets: see src/manager/tags.rs and storage-format.md ("Tag sets").
-- Prefixed to the scripts that write or read a tag's set.
local function int(x) return string.format('%.0f', x) end

-- Turns an earlier version's plain set at `key` into a sorted set, its members scored with the
-- set's expiry (or as long as the longest TTL if it has none), the set kept `skew` ms longer.
local function to_sorted(key, skew, now)
  if redis.call('TYPE', key).ok ~= 'set' then return end
  local at = redis.call('PEXPIRETIME', key)
  if at < 0 then at = now + 4503599627370496 end
  local members = redis.call('SMEMBERS', key)
  redis.call('DEL', key)
  for _, m in ipairs(members) do redis.call('ZADD', key, int(at), m) end
  if #members > 0 then redis.call('PEXPIREAT', key, int(at + skew)) end
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
