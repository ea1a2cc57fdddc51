
local function parse(m)
  local a = string.find(m, ',', 17, true)
  local b = string.find(m, ',', a + 1, true)
  local c = string.find(m, ':', b + 1, true)
  local ml = tonumber(string.sub(m, b + 1, c - 1))
  return tonumber(string.sub(m, 17, a - 1)), tonumber(string.sub(m, a + 1, b - 1)) or 0,
         string.sub(m, c + 1, c + ml), c + ml + 1
end

-- append one record; returns 1 (stored) or 0 (duplicate message id)
local function append(meta, users, oldest, mids, head, ukey, uid, ts, mid, rest, keep, ttl, hid)
  if redis.call('ZSCORE', mids, mid) then return 0 end
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  if seq == 1 then redis.call('HSET', meta, 'id', hid) end
  redis.call('ZADD', ukey, ts, string.format('%016x', seq) .. rest)
  redis.call('ZADD', mids, ts, mid)
  redis.call('ZADD', users, 'GT', ts, uid)
  local n = redis.call('ZCARD', ukey)
  if n > keep then
    local old = redis.call('ZRANGE', ukey, 0, n - keep - 1)
    for i = 1, #old do
      local _, _, omid = parse(old[i])
      redis.call('ZREM', mids, omid)
    end
    redis.call('ZREMRANGEBYRANK', ukey, 0, n - keep - 1)
  end
  local first = redis.call('ZRANGE', ukey, 0, 0, 'WITHSCORES')
  if first[2] then redis.call('ZADD', oldest, first[2], uid) else redis.call('ZREM', oldest, uid) end
  local top = redis.call('ZREVRANGE', ukey, 0, 0, 'WITHSCORES')
  if top[2] then redis.call('HSET', head, uid, top[2] .. '|' .. top[1]) else redis.call('HDEL', head, uid) end
  redis.call('PEXPIRE', head, ttl)
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', users, ttl)
  redis.call('PEXPIRE', oldest, ttl)
  redis.call('PEXPIRE', mids, ttl)
  redis.call('PEXPIRE', ukey, ttl)
  return 1
end
-- 1 while the history is not yet in the registry (the caller adds it there, then sets 'reg')
local function unregistered(meta)
  if redis.call('HGET', meta, 'reg') then return 0 end
  return 1
end

-- bulk append (loads, migration), in order. KEYS: 1 meta, 2 users, 3 oldest, 4 mids, 5 head
-- ARGV: 1 user key prefix, 2 max_per_user, 3 ttl ms, 4 history id, then per record:
--       user_id, timestamp, message_id, member without seq
local out = {}
local keep = tonumber(ARGV[2])
for i = 5, #ARGV, 4 do
  local uid = ARGV[i]
  out[#out + 1] = append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1] .. redis.sha1hex(uid), uid,
                         ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], keep, ARGV[3], ARGV[4])
end
out[#out + 1] = unregistered(KEYS[1])
return out
