-- Take a permit: set KEYS[1] to ARGV[1] for ARGV[2] ms unless a holder has it. A value
-- that is not a permit (not an integer, no expiry, another type) is no holder: a malformed
-- value is a miss, taken over, never a permit stuck for good.
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'string' and tonumber(current) and redis.call('PTTL', KEYS[1]) >= 0 then
  return 0
end
if current then redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
