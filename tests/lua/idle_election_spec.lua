-- IMAP IDLE across three Neovims: exactly one watches (the idle-watch lock
-- holder), a delivery is synced once, and when the watcher is SIGKILLed
-- another Neovim takes over and syncs the next delivery.
local t = require('helpers')
local describe, it, eq, ok = t.describe, t.it, t.eq, t.ok

--- Starts a child Neovim with IDLE on `demo`/INBOX (retrying every 500 ms)
--- that writes its state to `dir/state-PID` every 100 ms and appends each
--- sync start/end to `dir/events.log`. It exits when the spec's Neovim is
--- gone, and is killed after the test.
local function neovim(rc, wrapper, dir)
  local script = t.tmpdir() .. '/idle.lua'
  t.write(
    script,
    ([[
vim.opt.rtp:prepend(%q)
local dir = %q
local pid = vim.fn.getpid()
local parent = vim.uv.os_getppid()
vim.g.himalaya_sync = {
  mbsync = { config = %q, cmd = %q },
  notify = false,
  idle = { enabled = true, accounts = { 'demo' }, folders = { 'INBOX' } },
}
local function append(file, line)
  local f = assert(io.open(file, 'a'))
  f:write(line, '\n')
  f:close()
end
vim.api.nvim_create_autocmd('User', {
  pattern = { 'HimalayaSyncStarted', 'HimalayaSyncCompleted', 'HimalayaSyncFailed' },
  callback = function(ev)
    append(dir .. '/events.log', ('%%d %%s %%s %%s'):format(pid, ev.match, ev.data.type, ev.data.account))
  end,
})
-- The plugin file starts IDLE (vim.g enables it): retry every 500 ms.
local idle = require('himalaya.sync.idle')
idle.RETRY_MS = 500
vim.cmd('runtime plugin/himalaya-sync.vim')
idle.start()
local timer = assert(vim.uv.new_timer())
timer:start(0, 100, vim.schedule_wrap(function()
  if vim.uv.os_getppid() ~= parent then
    os.exit(3)
  end
  local file = ('%%s/state-%%d'):format(dir, pid)
  local f = assert(io.open(file .. '.tmp', 'w'))
  f:write(vim.json.encode({ pid = pid, watching = idle.is_watching(), list = idle.list() }))
  f:close()
  assert(vim.uv.fs_rename(file .. '.tmp', file))
end))
vim.wait(120000, function() return false end, 50)
]]):format(t.root, dir, rc, wrapper)
  )
  return t.child_nvim(script).proc
end

--- The last state each living child reported, by pid.
local function states(dir, alive)
  local out = {}
  for pid in pairs(alive) do
    local f = io.open(('%s/state-%d'):format(dir, pid))
    if f then
      local okd, s = pcall(vim.json.decode, f:read('*a'))
      f:close()
      if okd then
        out[pid] = s
      end
    end
  end
  return out
end

--- The pids of the children reporting that they watch (and are in IDLE on
--- INBOX), and whether every other child reports not watching.
local function watchers(dir, alive)
  local st = states(dir, alive)
  local w, others_idle, n = {}, true, 0
  for pid, s in pairs(st) do
    n = n + 1
    if s.watching then
      local l = s.list
      if #l == 1 and l[1].account == 'demo' and l[1].folder == 'INBOX' and l[1].idle then
        w[#w + 1] = pid
      else
        others_idle = false
      end
    elseif #s.list ~= 0 then
      others_idle = false
    end
  end
  return w, others_idle and n == vim.tbl_count(alive), st
end

--- Lines of the events log as `{pid, what, type}`.
local function events(dir)
  local out = {}
  local f = io.open(dir .. '/events.log')
  if f then
    for line in f:lines() do
      local pid, what, ty = line:match('^(%d+) (%S+) (%S+)')
      out[#out + 1] = { pid = tonumber(pid), what = what, type = ty }
    end
    f:close()
  end
  return out
end

--- The pid holding the idle-watch lock, seen from this Neovim.
local function lock_holder()
  for _, l in ipairs(require('himalaya.sync.lock').list_locks()) do
    if l.name == 'idle-watch' and l.held then
      return l.pid
    end
  end
end

--- Waits until exactly one living child watches and the others do not,
--- then checks it stays so over several retry periods; returns its pid.
local function elected(dir, alive, what)
  local w, rest
  t.wait_for(function()
    w, rest = watchers(dir, alive)
    return #w == 1 and rest
  end, 15000, what)
  -- Three retry periods later: still the same single watcher.
  vim.wait(1500)
  local w2, rest2, st = watchers(dir, alive)
  eq(w, w2, 'the same single watcher: ' .. vim.inspect(st))
  ok(rest2, 'the others do not watch: ' .. vim.inspect(st))
  eq(w[1], lock_holder(), 'the watcher holds idle-watch')
  return w[1]
end

--- Delivers one message and checks it is synced by exactly one mbsync run
--- (an inbox sync of `watcher`, no overlap) and arrives locally.
local function deliver_and_check(fx, dir, log, watcher)
  local runs_before = #t.mbsync_runs(log)
  local events_before = #events(dir)
  fx.deliver('demo', 'INBOX', 1)
  t.wait_for(function()
    local s = fx.ids('demo', 'server')
    return vim.deep_equal(s, fx.ids('demo', 'local'))
  end, 15000, 'the delivery to be synced')
  t.wait_for(function()
    local runs = t.mbsync_runs(log)
    return #runs > runs_before and runs[#runs].stop ~= nil
  end, 10000, 'the mbsync run to end')
  -- The watcher logs the sync's end once its engine event is handled.
  t.wait_for(function()
    return #events(dir) >= events_before + 2
  end, 10000, 'the watcher to log the sync')
  -- Time for a duplicate sync (from IDLE or another Neovim) to show up.
  vim.wait(2000)
  local runs, overlaps = t.mbsync_runs(log)
  eq(runs_before + 1, #runs, 'one mbsync run: ' .. vim.inspect(runs))
  eq({}, overlaps)
  eq(0, runs[#runs].rc, 'mbsync succeeded')
  local evs = vim.list_slice(events(dir), events_before + 1)
  eq({
    { pid = watcher, what = 'HimalayaSyncStarted', type = 'inbox' },
    { pid = watcher, what = 'HimalayaSyncCompleted', type = 'inbox' },
  }, evs, 'one inbox sync by the watcher')
end

describe('IDLE election', function()
  it('three Neovims: one watches, a delivery syncs once, a SIGKILLed watcher is replaced', function()
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    -- The local side starts equal to the server (plain mbsync, not logged).
    t.use(fx.mbsyncrc)
    ok(t.sync_and_wait('full', { account = 'demo' }).success)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))

    local dir = t.tmpdir()
    local log = dir .. '/mbsync.log'
    local wrapper = t.mbsync_wrapper(log)
    -- An mbsync a killed Neovim left behind (its wrapper shell's child).
    t.defer(function()
      for _, r in ipairs(t.mbsync_runs(log)) do
        if not r.stop then
          vim.system({ 'pkill', '-9', '-P', tostring(r.pid) }):wait()
          vim.system({ 'kill', '-9', tostring(r.pid) }):wait()
        end
      end
    end)
    local procs, alive = {}, {}
    for _ = 1, 3 do
      local p = neovim(fx.mbsyncrc, wrapper, dir)
      procs[p.pid] = p
      alive[p.pid] = true
    end

    -- 1. Exactly one watches.
    local first = elected(dir, alive, 'one watcher among three')
    eq({}, t.mbsync_runs(log), 'no sync before any delivery')

    -- 2. A delivery: one inbox sync, by the watcher.
    deliver_and_check(fx, dir, log, first)

    -- 3. The watcher is SIGKILLed: another one takes over.
    procs[first]:kill(9)
    procs[first]:wait(5000)
    alive[first] = nil
    local second = elected(dir, alive, 'a new watcher after the first was killed')
    ok(second ~= first)
    deliver_and_check(fx, dir, log, second)
    eq(2, #t.mbsync_runs(log))
    eq(5, #fx.ids('demo', 'server').INBOX, '3 generated + 2 delivered')
  end)
end)
