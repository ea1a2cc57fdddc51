
local function parse(m)
  local a = string.find(m, ',', 17, true)
  local b = string.find(m, ',', a + 1, true)
  local c = string.find(m, ':', b + 1, true)
  local ml = tonumber(string.sub(m, b + 1, c - 1))
  return tonumber(string.sub(m, 17, a - 1)), tonumber(string.sub(m, a + 1, b - 1)) or 0,
         string.sub(m, c + 1, c + ml), c + ml + 1
end

-- KEYS: 1 users zset, 2 head hash
-- ARGV: 1 user key prefix, 2 algorithm (or '__candidates__'), 3 max_records, 4 max_chars,
--       5 since, 6 time-decay scale, 7.. user, weight pairs
local ukp, algo = ARGV[1], ARGV[2]
local M, C, since, scale = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local find, sub, byte = string.find, string.sub, string.byte

local function bytelt(a, b)
  local la, lb = #a, #b
  local n = la
  if lb < n then n = lb end
  for i = 1, n do
    local x, y = byte(a, i), byte(b, i)
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

-- a user's records: u.r = {member1, score1, member2, score2, ...}, newest first, fetched lazily
-- (the newest comes from the head hash, for every user in one HMGET)
local function fetch(u, n)
  if not u.key then u.key = ukp .. redis.sha1hex(u.id) end
  local res = redis.call('ZREVRANGEBYSCORE', u.key, '+inf', since, 'WITHSCORES', 'LIMIT', u.n, n)
  if u.n == 0 then
    u.r = res
  else
    local r = u.r
    for x = 1, #res do r[#r + 1] = res[x] end
  end
  u.n = u.n + #res / 2
  if #res < 2 * n then u.done = true end
end
local function chars_of(m)
  local a = find(m, ',', 17, true)
  return tonumber(sub(m, 17, a - 1)), a
end

local cand = {}
local first = M
if #users > 0 then first = math.min(M, math.ceil(M / #users)) end
if algo == '__candidates__' then first = M end
local heads = {}
local nsince = tonumber(since)
for x = 1, #users, 1000 do
  local got = redis.call('HMGET', KEYS[2], unpack(users, x, math.min(#users, x + 999)))
  for y = 1, #got do heads[x + y - 1] = got[y] end
end
for x = 1, #users do
  local u = {id = users[x], last = scores[x], n = 0, done = false, k = 0, cum = 0, qsum = 0.0, prev = 0.0,
             f = 1.0, w = 1.0, key = false, r = false}
  local h = heads[x]
  if h then
    local bar = find(h, '|', 1, true)
    local ts = sub(h, 1, bar - 1)
    if tonumber(ts) >= nsince then
      u.r = {sub(h, bar + 1), ts}
      u.n = 1
      if first > 1 then fetch(u, first - 1) end
    else
      u.done = true
    end
  else
    fetch(u, first)
  end
  if u.n > 0 then cand[#cand + 1] = u end
end

if algo == '__candidates__' then
  local out = {}
  for x = 1, #cand do
    local u = cand[x]
    local row = {u.id, u.last}
    for k = 1, u.n do row[#row + 1] = u.r[2 * k - 1] end
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
    if u.n < q and not u.done then fetch(u, q - u.n) end
    for k = 1, math.min(q, u.n) do chosen[#chosen + 1] = {tonumber(u.r[2 * k]), u.id, u.r[2 * k - 1]} end
  end
  table.sort(chosen, function(a, b)
    if a[1] ~= b[1] then return a[1] > b[1] end
    if a[2] ~= b[2] then return bytelt(b[2], a[2]) end
    local _, _, ma = parse(a[3])
    local _, _, mb = parse(b[3])
    return bytelt(mb, ma)
  end)
  local total = 0
  for x = 1, math.min(M, #chosen) do
    local n = chars_of(chosen[x][3])
    if total + n > C then break end
    total = total + n
    out[#out + 1] = chosen[x][3]
  end
  return out
end

local decay = (algo == 'time_decay' or algo == 'hybrid') and scale > 0
local quality = (algo == 'quality' or algo == 'hybrid')
local weighted = (algo == 'weighted' or algo == 'hybrid')
local weights = {}
if weighted then for a = 7, #ARGV, 2 do weights[ARGV[a]] = tonumber(ARGV[a + 1]) end end
local tref = 0
if decay then
  tref = tonumber(cand[1].r[2])
  for x = 2, #cand do
    local t = tonumber(cand[x].r[2])
    if t > tref then tref = t end
  end
end

-- a binary min-heap of events (level, id = rank * (M + 1) + k, chars or -1 for a placeholder),
-- in three parallel arrays: no table per event
local hl, hi, hc, hn = {}, {}, {}, 0
local mult = M + 1
local function push(level, id, ch)
  hn = hn + 1
  local n = hn
  while n > 1 do
    local p = (n - n % 2) / 2
    local pl = hl[p]
    if level < pl or (level == pl and id < hi[p]) then
      hl[n], hi[n], hc[n] = pl, hi[p], hc[p]
      n = p
    else
      break
    end
  end
  hl[n], hi[n], hc[n] = level, id, ch
end
local function pop()
  local level, id, ch = hl[1], hi[1], hc[1]
  local ll, li, lc = hl[hn], hi[hn], hc[hn]
  hl[hn], hi[hn], hc[hn] = nil, nil, nil
  hn = hn - 1
  if hn > 0 then
    local x = 1
    while true do
      local l = 2 * x
      if l > hn then break end
      local r = l + 1
      local s = l
      if r <= hn and (hl[r] < hl[l] or (hl[r] == hl[l] and hi[r] < hi[l])) then s = r end
      if hl[s] < ll or (hl[s] == ll and hi[s] < li) then
        hl[x], hi[x], hc[x] = hl[s], hi[s], hc[s]
        x = s
      else
        break
      end
    end
    hl[x], hi[x], hc[x] = ll, li, lc
  end
  return level, id, ch
end

-- The next event of a user. When its record is not fetched yet (and the level is a monotone
-- function of the record: not for quality), push a placeholder at a lower bound of its level
-- instead; the record is fetched only if the placeholder reaches the top of the heap (then the
-- real event is pushed: it sorts after the placeholder, so the order is exactly the full sort's).
local lazy = not quality
local function advance(rank, fetched)
  local u = cand[rank]
  local k = u.k + 1
  if k > M then return end
  if k > u.n then
    if u.done then return end
    if lazy and not fetched then
      local lb = math.max(k / M, u.cum / C) * u.f / u.w
      if lb < u.prev then lb = u.prev end
      push(lb, rank * mult + k, -1)
      return
    end
    fetch(u, math.max(u.n, 4))
    if k > u.n then return end
  end
  u.k = k
  local m = u.r[2 * k - 1]
  local ch, a = chars_of(m)
  u.cum = u.cum + ch
  local base = math.max(k / M, u.cum / C)
  local factor = 1.0
  if decay then factor = 1.0 + (tref - tonumber(u.r[2 * k])) / scale end
  u.f = factor
  if quality then
    local b = find(m, ',', a + 1, true)
    local q = tonumber(sub(m, a + 1, b - 1)) or 0
    local v = 1.0
    if q > 0 then v = 1.0 + math.sqrt(q) end
    u.qsum = u.qsum + v
    factor = factor * (k / u.qsum)
  end
  local level = base * factor / u.w
  if level < u.prev then level = u.prev end
  u.prev = level
  push(level, rank * mult + k, ch)
end

for x = 1, #cand do
  local u = cand[x]
  if weighted then
    u.w = weights[u.id] or 1.0
    if not (u.w > 0) then u.w = 1.0 end
  end
  advance(x, true)
end
local taken, chars = 0, 0
while hn > 0 do
  local _, id, ch = pop()
  if taken >= M then break end
  local k = id % mult
  local rank = (id - k) / mult
  if ch < 0 then
    advance(rank, true)
  elseif chars + ch <= C then
    taken = taken + 1
    chars = chars + ch
    out[taken] = cand[rank].r[2 * k - 1]
    advance(rank, false)
  end
end
return out
