-- Read ONE entity hash's tiles as CSV lines "<row>,<tile ms>,<tile index>,<record>".
-- KEYS[1] the entity hash; ARGV[1] the row this key answers in the caller's request.
-- Tile fields are named "<tile ms>,<tile index>", so a line is plain concatenation: one
-- bulk string per key keeps the reply compact (parsing many small fields in the client
-- is what costs, DESIGN.md) for a few microseconds of server time per key. Offset
-- fields ("o:...") are skipped.
local all = redis.call('HGETALL', KEYS[1])
local out, n, row = {}, 0, ARGV[1] .. ','
for i = 1, #all, 2 do
  local field = all[i]
  if string.byte(field, 1) ~= 111 then
    out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = row, field, ',', all[i + 1], '\n'
    n = n + 5
  end
end
return table.concat(out)
