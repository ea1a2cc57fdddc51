"""The Lua scripts of the Redis history store (see :mod:`wxhelper.storage.redis` for the layout).

A record is one member of its user's sorted set, scored by its timestamp::

    <seq: 16 hex digits><chars>,<score>,<bytes of message_id>:<message_id><JSON payload>

``seq`` is a per-history insertion counter, so members of equal timestamp sort in
insertion order (as SQLite's ``ORDER BY timestamp DESC, id DESC``); ``chars`` is
the content's length in code points (Python's ``len``), which Lua cannot count.

The read script computes the fair selection server-side with exactly the
arithmetic of :mod:`wxhelper.fairness` (doubles, + - * / sqrt, the same tie
order) and fetches each user's records lazily, so its cost grows with the
records returned and the users considered, never with what is stored. It builds
the per-user key names itself from the history's hash tag and ``redis.sha1hex``
of the user id: all of them are in the history's Cluster slot.
"""

COMMON = r"""
local function parse(m)
  local a = string.find(m, ',', 17, true)
  local b = string.find(m, ',', a + 1, true)
  local c = string.find(m, ':', b + 1, true)
  local ml = tonumber(string.sub(m, b + 1, c - 1))
  return tonumber(string.sub(m, 17, a - 1)), tonumber(string.sub(m, a + 1, b - 1)) or 0,
         string.sub(m, c + 1, c + ml), c + ml + 1
end
"""

APPEND_FN = r"""
-- append one record; returns 0 (duplicate message id), 1 (stored) or 2 (stored, the history's first)
local function append(meta, users, oldest, mids, ukey, uid, ts, mid, rest, keep, ttl, hid)
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
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', users, ttl)
  redis.call('PEXPIRE', oldest, ttl)
  redis.call('PEXPIRE', mids, ttl)
  redis.call('PEXPIRE', ukey, ttl)
  if seq == 1 then return 2 end
  return 1
end
"""

APPEND = COMMON + APPEND_FN + r"""
-- KEYS: 1 meta hash, 2 users zset (user -> last active), 3 oldest zset (user -> oldest record),
--       4 mids zset (message_id -> timestamp), 5 the user's records zset
-- ARGV: 1 user_id, 2 timestamp, 3 message_id, 4 member without seq, 5 max_per_user, 6 ttl ms, 7 history id
return append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
              tonumber(ARGV[5]), ARGV[6], ARGV[7])
"""

APPEND_MANY = COMMON + APPEND_FN + r"""
-- bulk append (loads, migration), in order. KEYS: 1 meta, 2 users, 3 oldest, 4 mids
-- ARGV: 1 user key prefix, 2 max_per_user, 3 ttl ms, 4 history id, then per record:
--       user_id, timestamp, message_id, member without seq
local out = {}
local keep = tonumber(ARGV[2])
for i = 5, #ARGV, 4 do
  local uid = ARGV[i]
  out[#out + 1] = append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1] .. redis.sha1hex(uid), uid,
                         ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], keep, ARGV[3], ARGV[4])
end
return out
"""

READ = COMMON + r"""
-- KEYS: 1 users zset
-- ARGV: 1 user key prefix, 2 algorithm (or '__candidates__'), 3 max_records, 4 max_chars,
--       5 since, 6 time-decay scale, 7.. user, weight pairs
local ukp, algo = ARGV[1], ARGV[2]
local M, C, since, scale = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local weights = {}
for i = 7, #ARGV, 2 do weights[ARGV[i]] = tonumber(ARGV[i + 1]) end

local function bytelt(a, b)
  local la, lb = #a, #b
  local n = la
  if lb < n then n = lb end
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return la < lb
end

-- the M most recently active users (ties: user id ascending, byte order = code point order)
local raw = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', since, 'WITHSCORES', 'LIMIT', 0, M)
local users, scores = {}, {}
local i = 1
while i <= #raw do
  local s = raw[i + 1]
  local j = i
  while j + 2 <= #raw and raw[j + 3] == s do j = j + 2 end
  local g = j
  while g >= i do users[#users + 1] = raw[g]; scores[#scores + 1] = s; g = g - 2 end
  i = j + 2
end
if #users == M and M > 0 then
  local s = scores[M]
  local have = 0
  for x = 1, M do if scores[x] == s then have = have + 1 end end
  if redis.call('ZCOUNT', KEYS[1], s, s) > have then
    for x = M, M - have + 1, -1 do users[x] = nil; scores[x] = nil end
    local tied = redis.call('ZRANGEBYSCORE', KEYS[1], s, s, 'LIMIT', 0, have)
    for x = 1, #tied do users[#users + 1] = tied[x]; scores[#scores + 1] = s end
  end
end

local function fetch(u, n)
  local res = redis.call('ZREVRANGEBYSCORE', u.key, '+inf', since, 'WITHSCORES', 'LIMIT', #u.m, n)
  for x = 1, #res, 2 do
    local chars, q, mid, ps = parse(res[x])
    local k = #u.m + 1
    u.m[k] = res[x]; u.ch[k] = chars; u.q[k] = q; u.mid[k] = mid; u.ps[k] = ps
    u.ts[k] = tonumber(res[x + 1])
  end
  if #res < 2 * n then u.done = true end
end

local cand = {}
local first = M
if #users > 0 then first = math.min(M, math.ceil(M / #users) + 1) end
if algo == '__candidates__' then first = M end
for x = 1, #users do
  local u = {id = users[x], last = scores[x], key = ukp .. redis.sha1hex(users[x]),
             m = {}, ch = {}, q = {}, mid = {}, ps = {}, ts = {}, done = false,
             k = 0, cum = 0, qsum = 0.0, prev = 0.0}
  fetch(u, first)
  if #u.m > 0 then cand[#cand + 1] = u end
end

if algo == '__candidates__' then
  local out = {}
  for x = 1, #cand do
    local u = cand[x]
    local row = {u.id, u.last}
    for k = 1, #u.m do row[#row + 1] = string.sub(u.m[k], u.ps[k]) end
    out[#out + 1] = row
  end
  return out
end

local out = {}
if #cand == 0 then return out end

if algo == 'seed' then
  local q = math.max(1, math.floor(M / #cand))
  local chosen = {}
  for x = 1, #cand do
    local u = cand[x]
    if #u.m < q and not u.done then fetch(u, q - #u.m) end
    for k = 1, math.min(q, #u.m) do chosen[#chosen + 1] = {u.ts[k], u.id, u.mid[k], u, k} end
  end
  table.sort(chosen, function(a, b)
    if a[1] ~= b[1] then return a[1] > b[1] end
    if a[2] ~= b[2] then return bytelt(b[2], a[2]) end
    return bytelt(b[3], a[3])
  end)
  local total = 0
  for x = 1, math.min(M, #chosen) do
    local u, k = chosen[x][4], chosen[x][5]
    if total + u.ch[k] > C then break end
    total = total + u.ch[k]
    out[#out + 1] = string.sub(u.m[k], u.ps[k])
  end
  return out
end

local decay = (algo == 'time_decay' or algo == 'hybrid') and scale > 0
local quality = (algo == 'quality' or algo == 'hybrid')
local tref = cand[1].ts[1]
for x = 2, #cand do if cand[x].ts[1] > tref then tref = cand[x].ts[1] end end
for x = 1, #cand do
  local w = weights[cand[x].id] or 1.0
  if not (w > 0) then w = 1.0 end
  cand[x].w = w
end

-- a binary min-heap of events {level, rank, k}
local heap = {}
local function less(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end
local function push(e)
  local n = #heap + 1
  heap[n] = e
  while n > 1 do
    local p = math.floor(n / 2)
    if less(heap[n], heap[p]) then heap[n], heap[p] = heap[p], heap[n]; n = p else break end
  end
end
local function pop()
  local top = heap[1]
  local n = #heap
  heap[1] = heap[n]; heap[n] = nil; n = n - 1
  local x = 1
  while true do
    local l, r, s = 2 * x, 2 * x + 1, x
    if l <= n and less(heap[l], heap[s]) then s = l end
    if r <= n and less(heap[r], heap[s]) then s = r end
    if s == x then break end
    heap[x], heap[s] = heap[s], heap[x]; x = s
  end
  return top
end
local function advance(rank)
  local u = cand[rank]
  local k = u.k + 1
  if k > M then return end
  if k > #u.m then
    if u.done then return end
    fetch(u, math.max(#u.m, 4))
    if k > #u.m then return end
  end
  u.k = k
  u.cum = u.cum + u.ch[k]
  local base = math.max(k / M, u.cum / C)
  local factor = 1.0
  if decay then factor = 1.0 + (tref - u.ts[k]) / scale end
  if quality then
    local v = 1.0
    if u.q[k] > 0 then v = 1.0 + math.sqrt(u.q[k]) end
    u.qsum = u.qsum + v
    factor = factor * (k / u.qsum)
  end
  local level = base * factor / u.w
  if level < u.prev then level = u.prev end
  u.prev = level
  push({level, rank, k})
end

for x = 1, #cand do advance(x) end
local taken, chars = 0, 0
while #heap > 0 do
  local e = pop()
  if taken >= M then break end
  local u, k = cand[e[2]], e[3]
  if chars + u.ch[k] <= C then
    taken = taken + 1
    chars = chars + u.ch[k]
    out[#out + 1] = string.sub(u.m[k], u.ps[k])
    advance(e[2])
  end
end
return out
"""

PURGE = r"""
-- KEYS: 1 meta, 2 users, 3 oldest, 4 mids ; ARGV: 1 user key prefix, 2 before
local before = '(' .. ARGV[2]
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', before)
for i = 1, #stale do
  local key = ARGV[1] .. redis.sha1hex(stale[i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', before)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then redis.call('ZADD', KEYS[3], first[2], stale[i]) else redis.call('ZREM', KEYS[3], stale[i]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', before)
local n = redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', before)
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[3])
  return {n, 1}
end
return {n, 0}
"""

CLEAR = r"""
-- KEYS: 1 meta, 2 users, 3 oldest, 4 mids ; ARGV: 1 user key prefix
for z = 2, 3 do
  local users = redis.call('ZRANGE', KEYS[z], 0, -1)
  for i = 1, #users do redis.call('DEL', ARGV[1] .. redis.sha1hex(users[i])) end
end
local n = redis.call('ZCARD', KEYS[4])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return n
"""
