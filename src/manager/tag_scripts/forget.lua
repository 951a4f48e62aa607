-- Tag sets: see src/manager/tags.rs and storage-format.md ("Tag sets").
-- Removes members from a tag's set (KEYS[1]): ARGV holds each member and the score it was read
-- with; a member whose score changed since (tagged again meanwhile) stays.
local key = KEYS[1]
local plain = redis.call('TYPE', key).ok == 'set'
for i = 1, #ARGV, 2 do
  local m, score = ARGV[i], ARGV[i + 1]
  if plain then
    redis.call('SREM', key, m)
  elseif redis.call('ZSCORE', key, m) == score then
    redis.call('ZREM', key, m)
  end
end
return 0
