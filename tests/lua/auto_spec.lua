-- Auto-sync across three Neovims: one leader, leadership moves when it
-- exits, no duplicate syncs.
local t = require('helpers')
local describe, it, eq, ok = t.describe, t.it, t.eq, t.ok

local uv = vim.uv or vim.loop

local function now()
  local s, us = uv.gettimeofday()
  return s + us / 1e6
end

local function neovim(rc, log)
  local script = t.tmpdir() .. '/auto.lua'
  t.write(
    script,
    ([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = { mbsync = { config = %q }, notify = false, auto_sync = { enabled = true, interval = 1 / 60 } }
vim.api.nvim_create_autocmd('User', {
  pattern = 'HimalayaSyncStarted',
  callback = function(ev)
    local s, us = vim.uv.gettimeofday()
    local f = assert(io.open(%q, 'a'))
    f:write(('%%d %%.3f %%s\n'):format(vim.fn.getpid(), s + us / 1e6, ev.data.account))
    f:close()
  end,
})
vim.cmd('runtime plugin/himalaya-sync.vim')
vim.wait(120000, function() return false end, 50)
]]):format(t.root, rc, log)
  )
  return t.child_nvim(script).proc
end

local function starts(log, since)
  local out = {}
  local f = io.open(log)
  if not f then
    return out
  end
  for line in f:lines() do
    local pid, at = line:match('^(%d+) ([%d%.]+)')
    if tonumber(at) >= since then
      out[#out + 1] = { pid = tonumber(pid), at = tonumber(at) }
    end
  end
  f:close()
  return out
end

local function pids(list)
  local set = {}
  for _, s in ipairs(list) do
    set[s.pid] = true
  end
  return vim.tbl_keys(set)
end

describe('auto-sync', function()
  it('three Neovims: one leader syncs, leadership moves when it exits, no duplicate syncs', function()
    local fx = t.fixture({ '--folders', 'INBOX=10' })
    local log = t.tmpdir() .. '/starts.log'
    local procs = { neovim(fx.mbsyncrc, log), neovim(fx.mbsyncrc, log), neovim(fx.mbsyncrc, log) }
    local t0 = now()
    t.wait_for(function()
      return #starts(log, t0) >= 3
    end, 20000, 'three auto syncs')
    local first = starts(log, t0)
    eq(1, #pids(first), 'one leader: ' .. vim.inspect(first))
    local leader = first[1].pid
    for i = 2, #first do
      ok(first[i].at - first[i - 1].at > 0.4, 'no duplicate sync: ' .. vim.inspect(first))
    end

    -- The leader exits; another Neovim takes over at its next tick.
    for _, p in ipairs(procs) do
      if p.pid == leader then
        p:kill(9)
        p:wait(5000)
      end
    end
    local t1 = now()
    t.wait_for(function()
      return #starts(log, t1) >= 3
    end, 20000, 'auto syncs after the leader left')
    local second = starts(log, t1)
    eq(1, #pids(second), 'one new leader: ' .. vim.inspect(second))
    ok(second[1].pid ~= leader)
    for i = 2, #second do
      ok(second[i].at - second[i - 1].at > 0.4, 'no duplicate sync: ' .. vim.inspect(second))
    end
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
  end)

  it(':HimalayaSync auto says who leads: nobody yet, another process, or this Neovim', function()
    local dir = t.tmpdir()
    local quick = t.script(dir, 'quick-mbsync', 'exit 0')
    vim.g.himalaya_sync =
      { mbsync = { config = t.standalone_mbsyncrc(dir, t.closed_port()), cmd = quick }, notify = false }
    local auto = require('himalaya.sync.auto')
    local lock = require('himalaya.sync.lock')
    t.defer(function()
      auto.stop()
      vim.g.himalaya_sync = nil
    end)
    auto.start()
    eq(
      'auto-sync is on, every 15 min (no Neovim leads yet: the first to tick takes the lead): full sync of demo',
      auto.describe()
    )
    local other = t.tool_holds('auto-sync')
    t.wait_for(function()
      return lock.is_locked('auto-sync')
    end, 5000, 'the other process to lead')
    eq(('auto-sync is on, every 15 min (himalaya-sync %d leads): full sync of demo'):format(other.pid), auto.describe())
    other:kill(15)
    other:wait(5000)
    auto.tick()
    eq('auto-sync is on, every 15 min (this Neovim leads): full sync of demo', auto.describe())
    -- What it syncs, as configured.
    t.defer(function()
      require('himalaya.sync.config').setup({})
    end)
    require('himalaya.sync.config').setup({
      auto_sync = { accounts = { 'demo', 'work' }, type = 'inbox', smart = true },
    })
    eq(
      'auto-sync is on, every 15 min (this Neovim leads): inbox sync of demo, work when a check finds new mail',
      auto.describe()
    )
    t.wait_for(function()
      return not require('himalaya.sync.manager').is_busy()
    end, 10000, "the tick's sync to end")
  end)

  it('an account it cannot sync is shown once, not only logged at every tick', function()
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    vim.g.himalaya_sync = { mbsync = { config = fx.mbsyncrc }, auto_sync = { accounts = { 'gmial' } } }
    t.defer(function()
      vim.g.himalaya_sync = nil
    end)
    local seen = t.notifications()
    local auto = require('himalaya.sync.auto')
    auto.tick()
    auto.tick()
    eq(1, #seen, vim.inspect(seen))
    t.contains(seen[1][1], 'auto-sync: could not start gmial')
    eq(vim.log.levels.WARN, seen[1][2])
  end)

  it('a configuration made invalid while it runs is told once, not raised at every tick', function()
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    vim.g.himalaya_sync = { mbsync = { config = fx.mbsyncrc }, notify = false, auto_sync = { interval = 1 / 60 } }
    t.defer(function()
      vim.g.himalaya_sync = nil
    end)
    local auto = require('himalaya.sync.auto')
    auto.tick()
    vim.g.himalaya_sync = { mbsync = { config = fx.mbsyncrc, timeout = -5 } }
    local seen = t.notifications()
    vim.v.errmsg = ''
    auto.tick()
    auto.tick()
    eq(1, #seen, vim.inspect(seen))
    t.contains(seen[1][1], 'auto-sync: cannot sync: ')
    t.contains(seen[1][1], 'himalaya_sync.mbsync.timeout')
    eq(vim.log.levels.WARN, seen[1][2])
    eq('', vim.v.errmsg)
    auto.stop()
    vim.g.himalaya_sync = { mbsync = { config = fx.mbsyncrc }, notify = false }
    t.wait_for(function()
      return not require('himalaya.sync.manager').is_busy()
    end, 20000, "the first tick's sync to end")
  end)

  it('auto-sync and IDLE that cannot work say so once; no doubled prefix', function()
    -- In a Neovim of its own, without a library (this one has it loaded).
    local dir = t.tmpdir()
    local stdout = t.nvim_lua(([[
vim.opt.rtp:prepend(%q)
vim.env.HIMALAYA_SYNC_LIB = %q
vim.cmd('runtime plugin/himalaya-sync.vim')
local seen = {}
vim.notify = function(msg, level)
  seen[#seen + 1] = { msg, level }
end
local auto, idle = require('himalaya.sync.auto'), require('himalaya.sync.idle')
auto.tick()
auto.tick()
idle.try()
idle.try()
vim.cmd('HimalayaSync full demo')
io.stdout:write(vim.json.encode(seen))
]]):format(t.root, dir .. '/missing/libhimalaya_sync.so'))
    local seen = vim.json.decode(stdout)
    eq(3, #seen, stdout)
    local missing = 'HIMALAYA_SYNC_LIB points at ' .. dir .. '/missing/libhimalaya_sync.so'
    local function starts(want, got, level)
      eq(1, got[1]:find(want, 1, true), got[1])
      eq(level, got[2])
      eq(nil, got[1]:find('himalaya-sync: himalaya-sync', 1, true), got[1])
    end
    starts('himalaya-sync: auto-sync: cannot take the lead: ' .. missing, seen[1], vim.log.levels.WARN)
    starts('himalaya-sync: IDLE: cannot start: ' .. missing, seen[2], vim.log.levels.WARN)
    starts('himalaya-sync: ' .. missing, seen[3], vim.log.levels.ERROR)
  end)

  it("a tick's sync waits for another process that syncs the account, and then runs", function()
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    -- A history of its own: the tick skips an account synced less than
    -- half an interval ago, as demo was by the tests before.
    vim.g.himalaya_sync = {
      mbsync = { config = fx.mbsyncrc },
      notify = false,
      auto_sync = { interval = 1 },
      state_dir = t.tmpdir(),
    }
    t.defer(function()
      vim.g.himalaya_sync = nil
    end)
    local manager = require('himalaya.sync.manager')
    local holder = t.hold_plugin_lock('sync-demo', 60)
    require('himalaya.sync.auto').tick()
    t.wait_for(function()
      return manager.statusline() == 'sync demo waiting'
    end, 10000, 'the status line to show the wait: ' .. manager.statusline())
    holder.stop()
    t.wait_for(function()
      return manager.get_sync_info().status == 'completed'
    end, 30000, 'the sync to run after the other process')
    eq('', manager.statusline())
  end)

  it(':HimalayaSync auto turns it on and off', function()
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    vim.g.himalaya_sync = { mbsync = { config = fx.mbsyncrc }, notify = false, auto_sync = { interval = 1 / 60 } }
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local auto = require('himalaya.sync.auto')
    eq(false, auto.is_enabled())
    vim.cmd('HimalayaSync auto on')
    eq(true, auto.is_enabled())
    t.wait_for(function()
      return auto.is_leader() and #require('himalaya.sync.manager').get_sync_info().syncs > 0
    end, 10000, 'the first auto sync')
    -- Its lock is not released from under it: that would make two leaders.
    local released, why = require('himalaya.sync.lock').release_lock('auto-sync')
    eq(false, released)
    eq("lock auto-sync is held by this Neovim's auto-sync leadership; :HimalayaSync auto off gives it up", why)
    eq(true, auto.is_leader())
    vim.cmd('HimalayaSync auto toggle')
    eq(false, auto.is_enabled())
    eq(false, auto.is_leader())
    eq(false, require('himalaya.sync.lock').is_locked('auto-sync'))

    -- One tick by hand while it is off syncs, and keeps no lead from the
    -- auto-sync of other Neovims.
    local manager = require('himalaya.sync.manager')
    t.wait_for(function()
      return not manager.is_busy()
    end, 20000, 'the auto syncs to end')
    vim.wait(600)
    local function last_id()
      local syncs = manager.get_sync_info().syncs
      return #syncs > 0 and syncs[#syncs].id or 0
    end
    local before = last_id()
    auto.tick()
    eq(false, auto.is_leader())
    eq(false, require('himalaya.sync.lock').is_locked('auto-sync'))
    t.wait_for(function()
      return last_id() > before
    end, 5000, 'the sync of the tick')
  end)

  it('an inbox sync leaves the full sync of the next tick due; a full one puts it off', function()
    local fx = t.fixture({ '--folders', 'INBOX=2,Work=2' })
    -- A history of its own: earlier tests synced an account named demo too.
    t.use(fx.mbsyncrc, { auto_sync = { interval = 10 }, state_dir = t.tmpdir() })
    local manager = require('himalaya.sync.manager')
    local auto = require('himalaya.sync.auto')
    ok(t.sync_and_wait('inbox', { account = 'demo' }).success)
    fx.deliver('demo', 'Work', 1)
    local function syncs()
      return #manager.get_sync_info().syncs
    end
    local before = syncs()
    auto.tick()
    t.wait_for(function()
      local all = manager.get_sync_info().syncs
      return #all > before and all[#all].status == 'completed'
    end, 20000, 'the full sync of the tick')
    eq('full', manager.get_sync_info().syncs[syncs()].type)
    eq(3, #fx.ids('demo', 'local').Work)
    -- Right after that full sync, the next tick has nothing due.
    before = syncs()
    auto.tick()
    vim.wait(300)
    eq(before, syncs())
  end)

  it('a sync that fails in a way the next tick will too is told once, and :checkhealth says it', function()
    local fx = t.fixture({ '--folders', 'INBOX=2' })
    local rc = fx.dir .. '/mbsyncrc-wrong'
    t.write(rc, (t.read(fx.mbsyncrc):gsub('\nPass [^\n]*', '\nPass "wrong"')))
    t.use(rc, { auto_sync = { interval = 10 }, state_dir = t.tmpdir(), notify = { enabled = true } })
    local manager = require('himalaya.sync.manager')
    local auto = require('himalaya.sync.auto')
    local seen = t.notifications()
    local function failed()
      return vim.tbl_filter(function(n)
        return n[1]:find('auto-sync: full sync of demo failed: ', 1, true) ~= nil
      end, seen)
    end
    auto.tick()
    t.wait_for(function()
      return #failed() == 1
    end, 20000, 'the failure to be told')
    t.wait_for(function()
      return not manager.is_busy()
    end, 10000, 'the sync to end')
    -- Not again at the next tick: it failed as before.
    auto.tick()
    t.wait_for(function()
      local h = (manager.history() or {}).demo or {}
      return h.syncs_today == 2
    end, 20000, 'the second sync')
    vim.wait(200)
    eq(1, #failed(), vim.inspect(seen))
    auto.start()
    t.defer(auto.stop)
    vim.cmd('checkhealth himalaya.sync')
    local out = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
    vim.cmd('bwipeout!')
    t.contains(out, 'WARNING the last sync of demo failed (auth): ')
  end)

  it('started from a libuv callback, it starts and leads', function()
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    t.use(fx.mbsyncrc, { auto_sync = { interval = 1 / 60 } })
    local auto = require('himalaya.sync.auto')
    t.defer(auto.stop)
    local result
    local timer = assert(uv.new_timer())
    timer:start(0, 0, function()
      timer:close()
      result = { pcall(auto.start) }
    end)
    t.wait_for(function()
      return result ~= nil and auto.is_enabled()
    end, 5000, 'auto-sync to start')
    eq({ true }, result)
    t.wait_for(auto.is_leader, 10000, 'the first tick to take the lead')
  end)
end)
