local t = require('helpers')
local describe, it, eq, ok, contains = t.describe, t.it, t.eq, t.ok, t.contains

local lock = require('himalaya.sync.lock')

local function lock_dir()
  return assert(lock.lock_dir())
end

describe('himalaya.sync.lock', function()
  it('uses a private folder under $XDG_RUNTIME_DIR', function()
    local dir = lock_dir()
    eq(os.getenv('XDG_RUNTIME_DIR') .. '/himalaya-sync/locks', dir)
    eq(tonumber('40700', 8), vim.uv.fs_stat(dir).mode)
  end)

  it('acquires, reports and releases', function()
    eq(true, lock.acquire_lock('acct', 0))
    local info = vim.tbl_filter(function(l)
      return l.name == 'acct'
    end, lock.list_locks())[1]
    ok(info and info.held and info.mine, vim.inspect(info))
    eq(vim.fn.getpid(), info.pid)
    ok(info.since and info.since <= os.time())
    ok(lock.is_locked('acct'))
    eq(true, lock.release_lock('acct'))
    eq(false, lock.release_lock('acct'))
    ok(not lock.is_locked('acct'))
  end)

  it('is exclusive within one Neovim, with a clear message', function()
    eq(true, lock.acquire_lock('same', 0))
    t.defer(function()
      lock.release_lock('same')
    end)
    local got, err, kind = lock.acquire_lock('same', 0)
    eq(false, got)
    eq('locked', kind)
    contains(err, 'same')
    -- Only this Neovim could release it: the blocking form does not wait
    -- (and freeze the editor) for a lock it holds itself.
    local t0 = vim.uv.hrtime()
    got, err, kind = lock.acquire_lock('same', 30)
    eq({ false, 'locked' }, { got, kind })
    contains(err, 'already held by this Neovim')
    ok((vim.uv.hrtime() - t0) / 1e9 < 5, 'failed without waiting')
    got, err, kind = lock.with_lock('same', function() end, 30)
    eq({ false, 'locked' }, { got, kind })
  end)

  it('rejects bad names and timeouts with the bad value in the message', function()
    for _, bad in ipairs({ 'a/b', '..', '../x', 'a\0b', 'tab\there', ('x'):rep(300), '' }) do
      local got, err, kind = lock.acquire_lock(bad, 0)
      eq(false, got, vim.inspect(bad))
      eq('invalid', kind, vim.inspect(bad))
      ok(type(err) == 'string' and err:find('invalid lock name'), err)
    end
    local got, err, kind = lock.acquire_lock(42, 0)
    eq({ false, 'invalid' }, { got, kind })
    contains(err, 'expected a string')
    -- Not UTF-8: refused like any bad name, not raised with a traceback.
    got, err, kind = lock.acquire_lock('\xff', 0)
    eq({ false, 'invalid' }, { got, kind })
    contains(err, 'not UTF-8')
    got, err = lock.release_lock('\xff')
    eq(false, got)
    contains(err, 'not UTF-8')
    got, err = lock.acquire_lock('fine', -1)
    eq(false, got)
    contains(err, '-1')
    got, err = lock.acquire_lock('fine', 'soon')
    eq(false, got)
    contains(err, 'soon')
  end)

  it('with_lock returns the function results and releases on error', function()
    eq(
      { 1, 'two', nil, 4 },
      { lock.with_lock('w', function()
        ok(lock.is_locked('w'))
        return 1, 'two', nil, 4
      end) }
    )
    ok(not lock.is_locked('w'))
    local pok, perr = pcall(lock.with_lock, 'w', function()
      error('boom', 0)
    end)
    eq(false, pok)
    eq('boom', perr)
    ok(not lock.is_locked('w'), 'released after error')
  end)

  it('a plain process holds the lock; the callback form waits without blocking', function()
    local file = lock_dir() .. '/ext.lock'
    t.hold_lock(file, 1.5)
    t.wait_for(function()
      return lock.is_locked('ext')
    end, 5000, 'flock(1) to take the lock')
    local info = vim.tbl_filter(function(l)
      return l.name == 'ext'
    end, lock.list_locks())[1]
    eq('flock', info.process)
    eq(false, info.mine)
    eq(false, (lock.acquire_lock('ext', 0)))

    local ticks, result = 0, nil
    local timer = vim.uv.new_timer()
    timer:start(0, 10, function()
      ticks = ticks + 1
    end)
    local started = vim.uv.hrtime()
    eq(
      true,
      lock.acquire_lock('ext', 10, function(got, err)
        result = { got, err }
      end)
    )
    local returned_ms = (vim.uv.hrtime() - started) / 1e6
    eq(nil, result, 'no answer yet when the call returned')
    ok(returned_ms < 500, ('the callback form returned after %.1f ms'):format(returned_ms))
    t.wait_for(function()
      return result ~= nil
    end, 10000, 'the lock callback')
    timer:stop()
    timer:close()
    eq({ true }, result)
    ok(ticks > 20, 'the main loop kept running while waiting: ' .. ticks .. ' ticks')
    eq(true, lock.release_lock('ext'))
  end)

  it('many waits in the callback form hold no thread: other requests are answered at once', function()
    eq(true, lock.acquire_lock('crowded', 0))
    -- More waits than the engine has threads for blocking work (64).
    local answered = 0
    for _ = 1, 100 do
      lock.acquire_lock('crowded', 30, function(got)
        answered = answered + 1
        if got then
          lock.release_lock('crowded')
        end
      end)
    end
    local other
    local started = vim.uv.hrtime()
    lock.acquire_lock('uncrowded', 0, function(got)
      other = { got, (vim.uv.hrtime() - started) / 1e6 }
    end)
    t.wait_for(function()
      return other ~= nil
    end, 5000, 'the answer for a free lock')
    eq(true, other[1])
    ok(other[2] < 1000, ('answered after %.0f ms'):format(other[2]))
    eq(true, lock.release_lock('uncrowded'))
    -- Released: each waiter takes it in turn, and gives it back.
    eq(true, lock.release_lock('crowded'))
    t.wait_for(function()
      return answered == 100
    end, 20000, 'every waiter to be answered (' .. answered .. ')')
    ok(not lock.is_locked('crowded'))
  end)

  it('from a fast event: refused until the main loop has opened the lock folder, then working', function()
    -- In a Neovim of its own: this one has the library loaded already.
    local stdout = t.nvim_lua(([[
vim.opt.rtp:prepend(%q)
local lock = require('himalaya.sync.lock')
local function in_callback(fn)
  local out
  local timer = assert(vim.uv.new_timer())
  timer:start(0, 0, function()
    timer:close()
    out = { pcall(fn) }
  end)
  vim.wait(5000, function()
    return out ~= nil
  end)
  return out
end
local before = in_callback(function()
  return lock.acquire_lock('fast', 0)
end)
assert(lock.list_locks())
local after = in_callback(function()
  return lock.acquire_lock('fast', 0)
end)
local released = in_callback(function()
  return lock.release_lock('fast')
end)
io.stdout:write(vim.json.encode({ before = before, after = after, released = released }))
]]):format(t.root))
    local r = vim.json.decode(stdout)
    eq({ true, false }, { r.before[1], r.before[2] })
    contains(r.before[3], 'cannot start in a fast event (a libuv callback)')
    eq('invalid', r.before[4])
    eq({ true, true }, r.after)
    eq({ true, true }, r.released)
  end)

  it('times out with the holder named', function()
    local file = lock_dir() .. '/busy.lock'
    local holder = t.hold_lock(file, 30)
    t.wait_for(function()
      return lock.is_locked('busy')
    end, 5000)
    local started = vim.uv.hrtime()
    local got, err, kind = lock.acquire_lock('busy', 0.3)
    local waited = (vim.uv.hrtime() - started) / 1e9
    eq(false, got)
    eq('locked', kind)
    contains(err, 'flock')
    ok(waited >= 0.3, 'waited ' .. waited)
    -- The holder dies: the lock is free at once.
    holder.stop()
    eq(true, lock.acquire_lock('busy', 0))
    lock.release_lock('busy')
  end)

  it('CTRL-C ends a blocking wait, which leaves nothing behind', function()
    local file = lock_dir() .. '/ctrlc.lock'
    local holder = t.hold_lock(file, 30)
    t.wait_for(function()
      return lock.is_locked('ctrlc')
    end, 5000, 'flock(1) to take the lock')
    local ctrl_c = assert(vim.uv.new_timer())
    t.defer(function()
      ctrl_c:close()
    end)
    ctrl_c:start(300, 0, function()
      vim.api.nvim_input('<C-c>')
    end)
    local started = vim.uv.hrtime()
    local got, err, kind = lock.acquire_lock('ctrlc', 10)
    local ms = (vim.uv.hrtime() - started) / 1e6
    eq({ false, 'cancelled' }, { got, kind }, err)
    eq('waiting for lock "ctrlc" was cancelled (CTRL-C)', err)
    -- Stopped by the CTRL-C, not by the 10 s limit.
    ok(ms >= 250 and ms < 5000, ('stopped waiting after %.0f ms'):format(ms))
    -- The holder lets go: nothing of this Neovim takes the lock later.
    holder.stop()
    vim.wait(300)
    ok(not vim.tbl_contains(lock._ready().lock_held(), 'ctrlc'), 'not held by this Neovim')
    ok(not lock.is_locked('ctrlc'), 'free')
    local free = vim.system({ 'flock', '-n', '-x', file, 'true' }):wait(5000)
    eq(0, free.code, 'another process can take it')
    -- And it can be taken again, and kept.
    eq(true, lock.acquire_lock('ctrlc', 1))
    local info = vim.tbl_filter(function(l)
      return l.name == 'ctrlc'
    end, lock.list_locks())[1]
    ok(info and info.held and info.mine, vim.inspect(info))
    eq(true, lock.release_lock('ctrlc'))
  end)

  it('cleans up stale lock files but never held ones', function()
    eq(true, lock.acquire_lock('keep', 0))
    lock.acquire_lock('gone', 0)
    lock.release_lock('gone')
    local removed = lock.cleanup_stale_locks()
    ok(removed >= 1)
    local names = vim.tbl_map(function(l)
      return l.name
    end, lock.list_locks())
    ok(vim.tbl_contains(names, 'keep'))
    ok(not vim.tbl_contains(names, 'gone'))
    eq(true, lock.release_lock('keep'))
    eq(lock.cleanup_locks, lock.cleanup_stale_locks)
  end)

  it(':HimalayaSync cleanup cancels the syncs and removes the lock files nobody holds', function()
    eq(true, lock.acquire_lock('held', 0))
    t.defer(function()
      lock.release_lock('held')
    end)
    lock.acquire_lock('stale', 0)
    lock.release_lock('stale')
    local seen = t.notifications()
    vim.cmd('runtime plugin/himalaya-sync.vim')
    vim.cmd('HimalayaSync cleanup')
    t.contains(seen[1][1], 'no sync was running; removed ')
    local names = vim.tbl_map(function(l)
      return l.name
    end, lock.list_locks())
    ok(vim.tbl_contains(names, 'held'), 'a held lock is kept')
    ok(not vim.tbl_contains(names, 'stale'), 'the unheld one is gone')
  end)

  it('keeps the counter exact with Neovims and plain processes contending', function()
    local dir = t.tmpdir()
    local counter = dir .. '/counter'
    local f = assert(io.open(counter, 'w'))
    f:write('0')
    f:close()
    local rounds = 200
    local script = dir .. '/worker.lua'
    f = assert(io.open(script, 'w'))
    f:write(([[
vim.opt.rtp:prepend(%q)
local lock = require('himalaya.sync.lock')
for _ = 1, %d do
  assert(lock.acquire_lock('counter', 30))
  local fh = assert(io.open(%q)); local n = tonumber(fh:read('*a')); fh:close()
  fh = assert(io.open(%q, 'w')); fh:write(tostring(n + 1)); fh:close()
  assert(lock.release_lock('counter'))
end
]]):format(t.root, rounds, counter, counter))
    f:close()
    local lockfile = lock_dir() .. '/counter.lock'
    local shell = ("for i in $(seq %d); do flock -x %s sh -c 'n=$(cat %s); echo $((n+1)) > %s'; done"):format(
      rounds,
      lockfile,
      counter,
      counter
    )
    local procs = {
      vim.system({ vim.v.progpath, '--headless', '-u', 'NONE', '-i', 'NONE', '-n', '-l', script }, { text = true }),
      vim.system({ vim.v.progpath, '--headless', '-u', 'NONE', '-i', 'NONE', '-n', '-l', script }, { text = true }),
      vim.system({ 'sh', '-c', shell }, { text = true }),
      vim.system({ 'sh', '-c', shell }, { text = true }),
    }
    t.defer(function()
      for _, p in ipairs(procs) do
        pcall(p.kill, p, 9)
      end
    end)
    for i, p in ipairs(procs) do
      local r = p:wait(120000)
      eq(0, r.code, ('worker %d: %s'):format(i, r.stderr))
    end
    f = assert(io.open(counter))
    local n = tonumber(f:read('*a'))
    f:close()
    eq(4 * rounds, n)
  end)
end)
