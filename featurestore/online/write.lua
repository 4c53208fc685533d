-- Write merged tile records to entity hashes, each hash only if no one wrote it since
-- the caller read it (compare-and-set on its write token, field 'w', which every write
-- sets anew: the writer's id and a counter, so a token never comes back). The caller
-- merged the records itself (featurestore/online/merge.py); the layout is in
-- featurestore/online/layout.py.
--
-- KEYS     entity hashes: many per call on one Redis, one per call on a Cluster (a
--          script's keys must share a slot)
-- ARGV[1]  key TTL in ms
-- then per key, in KEYS order: the write token the caller read ("": none), n, p, then
-- n field/value pairs to set (tiles, offset marks and the new write token), then p
-- prunes (tile field prefix "<g>,", oldest tile index of that granularity to keep).
--
-- Returns one number per key: 1 written, 0 not written (the hash's token is not the
-- one read: another writer came between; the caller reads and merges again).
local ttl = ARGV[1]
local PART = 1000  -- arguments per HSET (even: field/value pairs stay whole)
local out, a = {}, 2
for k = 1, #KEYS do
  local key = KEYS[k]
  local expected, n, p = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local first, last = a + 3, a + 2 + 2 * n
  if (redis.call('HGET', key, 'w') or '') ~= expected then
    out[k] = 0
  else
    for i = first, last, PART do
      redis.call('HSET', key, unpack(ARGV, i, math.min(i + PART - 1, last)))
    end
    -- Tiles that fell out of their granularity's retention (asked for when a batch
    -- creates a tile, one in eight): reads select tiles by window, so a tile kept a
    -- little longer changes no value; pruning only bounds the hash.
    if p > 0 then
      for _, field in ipairs(redis.call('HKEYS', key)) do
        for j = last + 1, last + 2 * p, 2 do
          local prefix = ARGV[j]
          if string.sub(field, 1, #prefix) == prefix and
             tonumber(string.sub(field, #prefix + 1)) < tonumber(ARGV[j + 1]) then
            redis.call('HDEL', key, field)
          end
        end
      end
    end
    redis.call('PEXPIRE', key, ttl)
    out[k] = 1
  end
  a = last + 1 + 2 * p
end
return out
