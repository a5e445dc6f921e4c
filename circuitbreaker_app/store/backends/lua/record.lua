-- Record an outcome: add to the bucket, give a new bucket its TTL, and hand back the
-- circuit's state entry when its generation is not the one the caller knows.
-- KEYS: bucket[, state entry[, call totals…]]. ARGV: delta, TTL (ms), known generation,
-- known circuit id, then the count to add to each call total (one per outcome key).
-- Whatever else is at the bucket's key (not an integer, a negative one, another type) is
-- replaced: a malformed value is a miss, never an error.
local value = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(value) ~= 'number' or value < tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  value = redis.call('INCRBY', KEYS[1], ARGV[1])
end
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
-- The call totals; a malformed value there is replaced, as at the other keys.
for i = 3, #KEYS do
  if type(redis.pcall('INCRBY', KEYS[i], ARGV[i + 2])) ~= 'number' then
    redis.call('DEL', KEYS[i])
    redis.call('INCRBY', KEYS[i], ARGV[i + 2])
  end
end
if KEYS[2] then
  local raw = redis.pcall('GET', KEYS[2])
  if type(raw) == 'string' then
    -- An entry of ours starts {"id":…,"state":"…","generation":…, (compact JSON, written by
    -- CircuitEntry.to_json): its id and generation are read there, without decoding the
    -- whole entry; anything written otherwise is decoded, as before.
    local id, generation = string.match(raw, '^{"id":(%d+),"state":"[%a_]+","generation":(%d+),')
    if id then
      if tonumber(generation) ~= tonumber(ARGV[3]) or tonumber(id) ~= tonumber(ARGV[4]) then
        return {value, raw}
      end
    else
      local ok, entry = pcall(cjson.decode, raw)
      if not ok or type(entry) ~= 'table' or entry['generation'] ~= tonumber(ARGV[3])
          or entry['id'] ~= tonumber(ARGV[4]) then
        return {value, raw}
      end
    end
  end
end
return {value}
