-- Apply one batch's tile partials to ONE entity hash, once per source offset.
-- The hash layout is described in featurestore/online/layout.py.
--
-- KEYS[1]  the entity hash of (view, version, entity)
-- ARGV[1]  key TTL in ms      ARGV[2] layout: one char per value, 'p' plain, 's' sketched
-- ARGV[3]  segment count      ARGV[4] prune count      ARGV[5] sketch size K
-- then per segment:  offset field, min offset, max offset, tile field, record
-- then per prune:    tile field prefix ("<g>,"), oldest tile index to keep
--
-- Returns the number of segments applied (0: all were applied before), or -1 when a
-- segment straddles the stored offset (a replay cut at other batch boundaries): the
-- caller then resends that entity one event per segment. Nothing is written before
-- every segment is classified, so -1 leaves the hash untouched.
local key = KEYS[1]
local layout = ARGV[2]
local nseg, nprune, K = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local BASE = 6
local PRUNE_EVERY = 8

local applied = {}
for i = 0, nseg - 1 do
  local j = BASE + i * 5
  local f = ARGV[j]
  if applied[f] == nil then applied[f] = tonumber(redis.call('HGET', key, f) or '-1') end
  if tonumber(ARGV[j + 1]) <= applied[f] and tonumber(ARGV[j + 2]) > applied[f] then
    return -1
  end
end

local function tokens(record)
  local out = {}
  for t in string.gmatch(record .. ',', '([^,]*),') do out[#out + 1] = t end
  return out
end

local function fmt(x) return string.format('%.17g', x) end

local function add(a, b)
  if a == '' and b == '' then return '' end
  return fmt((tonumber(a) or 0) + (tonumber(b) or 0))
end

local function pick(a, b, b_wins)
  if a == '' then return b end
  if b == '' then return a end
  if b_wins(tonumber(b), tonumber(a)) then return b end
  return a
end

local function lt(x, y) return x < y end
local function gt(x, y) return x > y end

-- Sketch hashes are written zero-padded to 16 digits, so string order is numeric order
-- and a merge needs no number conversions.
local function union(a, b)
  if a == '' then return b end
  if b == '' then return a end
  local xs, ys, out = {}, {}, {}
  for h in string.gmatch(a, '%d+') do xs[#xs + 1] = h end
  for h in string.gmatch(b, '%d+') do ys[#ys + 1] = h end
  local i, j, n, last = 1, 1, 0, nil
  while n < K and (i <= #xs or j <= #ys) do
    local v
    if j > #ys or (i <= #xs and xs[i] <= ys[j]) then v = xs[i]; i = i + 1
    else v = ys[j]; j = j + 1 end
    if v ~= last then n = n + 1; out[n] = v; last = v end
  end
  return table.concat(out, ' ')
end

-- Merge two records of the same layout: counts and sums add, min/max combine, last
-- goes to the higher (time, offset), sketches keep the K smallest hashes.
local function merge(old, new)
  local a, b, out = tokens(old), tokens(new), {}
  local p = 1
  for v = 1, #layout do
    out[p] = fmt(tonumber(a[p]) + tonumber(b[p]))
    out[p + 1] = add(a[p + 1], b[p + 1])
    out[p + 2] = add(a[p + 2], b[p + 2])
    out[p + 3] = pick(a[p + 3], b[p + 3], lt)
    out[p + 4] = pick(a[p + 4], b[p + 4], gt)
    local at, bt = tonumber(a[p + 6]), tonumber(b[p + 6])
    local newer = at == nil or (bt ~= nil and (bt > at or
      (bt == at and tonumber(b[p + 7]) > tonumber(a[p + 7]))))
    local src = newer and b or a
    out[p + 5], out[p + 6], out[p + 7] = src[p + 5], src[p + 6], src[p + 7]
    p = p + 8
    if string.sub(layout, v, v) == 's' then
      out[p] = union(a[p], b[p])
      p = p + 1
    end
  end
  return table.concat(out, ',')
end

local written, created, newest = 0, false, {}
for i = 0, nseg - 1 do
  local j = BASE + i * 5
  local f = ARGV[j]
  if tonumber(ARGV[j + 1]) > applied[f] then
    local field, record = ARGV[j + 3], ARGV[j + 4]
    local old = redis.call('HGET', key, field)
    if old then
      redis.call('HSET', key, field, merge(old, record))
    else
      redis.call('HSET', key, field, record)
      -- Pruning scans every field: amortise it over tiles (1 in PRUNE_EVERY new tiles).
      local index = tonumber(string.match(field, ',(-?%d+)$'))
      if index % PRUNE_EVERY == 0 then created = true end
    end
    local hi = tonumber(ARGV[j + 2])
    if newest[f] == nil or hi > newest[f] then newest[f] = hi end
    written = written + 1
  end
end
if written == 0 then return 0 end
for f, hi in pairs(newest) do redis.call('HSET', key, f, string.format('%d', hi)) end

-- A new tile appeared (one in PRUNE_EVERY): drop tiles that fell out of their
-- granularity's retention. Reads select tiles by window, so a tile kept a little longer
-- changes no value; pruning only bounds the hash.
if created and nprune > 0 then
  local base = BASE + nseg * 5
  for _, field in ipairs(redis.call('HKEYS', key)) do
    for i = 0, nprune - 1 do
      local prefix = ARGV[base + i * 2]
      if string.sub(field, 1, #prefix) == prefix then
        if tonumber(string.sub(field, #prefix + 1)) < tonumber(ARGV[base + i * 2 + 1]) then
          redis.call('HDEL', key, field)
        end
      end
    end
  end
end
redis.call('PEXPIRE', key, ARGV[1])
return written
