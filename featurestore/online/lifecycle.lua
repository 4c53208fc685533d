-- Compare-and-set one view's lifecycle state, and log the change, atomically.
-- KEYS[1] the state hash, KEYS[2] its log list (same hash tag: one Cluster slot).
-- ARGV[1] view, ARGV[2] the state JSON the caller read ("" when there was none),
-- ARGV[3] the new state JSON, ARGV[4] the log event JSON, ARGV[5] events to keep.
-- Returns 1 when written, 0 when the state changed since the caller read it.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if (current or '') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[4])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
return 1
