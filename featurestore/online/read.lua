-- Read ONE entity hash's tiles as CSV lines "<head><tile ms>,<tile index>,<before><record><after>".
-- KEYS[1] the entity hash; ARGV[1] the line head (the request row this key answers, and
-- its source view when several views are read together: "<row>," or "<row>,<source>,");
-- ARGV[2] and ARGV[3] the empty slots (commas) of the other views' records before and
-- after this one, so the lines of every view of a request parse as ONE CSV frame
-- (layout.decode_sources). Tile fields are named "<tile ms>,<tile index>", so a line is
-- plain concatenation: one bulk string per key keeps the reply compact (parsing many
-- small fields in the client is what costs, DESIGN.md) for a few microseconds of server
-- time per key. Offset fields ("o:...") are skipped.
local all = redis.call('HGETALL', KEYS[1])
local out, n = {}, 0
local head, before, after = ARGV[1], ',' .. ARGV[2], ARGV[3] .. '\n'
for i = 1, #all, 2 do
  local field = all[i]
  if string.byte(field, 1) ~= 111 then
    out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = head, field, before, all[i + 1], after
    n = n + 5
  end
end
return table.concat(out)
