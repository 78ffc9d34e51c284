-- Bad input through the Lua API and :HimalayaSync: wrong types, unknown
-- sync types and accounts, names with shell metacharacters or `../`. Each
-- gives a clear one-line error (no traceback), and nothing is started: the
-- mbsync command is a wrapper that logs every run, and the files the
-- injected commands would create must not exist.
local t = require('helpers')
local describe, it, eq, ok, contains = t.describe, t.it, t.eq, t.ok, t.contains

local manager = require('himalaya.sync.manager')
local mbsync = require('himalaya.sync.mbsync')
local lock = require('himalaya.sync.lock')

--- Shell metacharacters and path tricks; `%s` is a marker file path the
--- injected command would create.
local NASTY = {
  '$(touch x)',
  '$(touch %s)',
  'demo;touch %s',
  'demo; touch %s',
  '`touch %s`',
  'demo && touch %s',
  'demo | touch %s',
  'demo\ntouch %s',
  '../demo',
  '../../../tmp/%s',
  'demo/../../x',
  '-a',
  '--help',
  '-c/etc/passwd',
  '',
  -- Quoted in the error, cut short: not a megabyte in every notification.
  ('a'):rep(1000000),
}

--- One setup per test: an mbsyncrc, the wrapper as mbsync, :HimalayaSync,
--- and a working folder where `touch x` would land.
local function setup()
  local dir = t.tmpdir()
  -- Nothing here may reach a server: a port where nothing listens.
  local rc = t.standalone_mbsyncrc(dir, t.closed_port())
  local fx = { mbsyncrc = rc }
  local log = dir .. '/mbsync-runs.log'
  local wrapper = t.mbsync_wrapper(log)
  t.use(rc, { mbsync = { cmd = wrapper, timeout = 10 } })
  if vim.fn.exists(':HimalayaSync') ~= 2 then
    vim.cmd.source(t.root .. '/plugin/himalaya-sync.vim')
  end
  local cwd = vim.fn.getcwd()
  vim.fn.chdir(dir)
  t.defer(function()
    vim.fn.chdir(cwd)
  end)
  local marker = dir .. '/pwned'
  local names = {}
  for _, n in ipairs(NASTY) do
    names[#names + 1] = n:find('%s', 1, true) and n:format(marker) or n
  end
  local env = { fx = fx, dir = dir, log = log, marker = marker, names = names }
  function env.nothing_started(what)
    vim.wait(300)
    eq({}, t.pgrep('mbsync .*' .. fx.mbsyncrc), what .. ': no mbsync runs')
    local runs = t.mbsync_runs(log)
    eq(0, #runs, what .. ': mbsync was never started')
    for _, f in ipairs({ marker, dir .. '/x', t.root .. '/x', dir .. '/../x' }) do
      eq(0, vim.fn.filereadable(f), what .. ': ' .. f .. ' was not created')
    end
  end
  return env
end

--- A clear error: a one-line message without a traceback or source position.
local function clear(err, what)
  ok(type(err) == 'string' and err ~= '', what .. ': an error message, got ' .. vim.inspect(err))
  ok(#err <= 1200, what .. ': at most 1,200 bytes, got ' .. #err)
  ok(not err:find('\n'), what .. ': one line: ' .. err:sub(1, 300))
  ok(not err:find('traceback', 1, true), what .. ': no traceback: ' .. err)
  ok(not err:find('%.lua:%d+:'), what .. ': no source position: ' .. err)
  ok(not err:find('%.rs:%d+'), what .. ': no Rust source position: ' .. err)
  ok(not err:find('panic', 1, true), what .. ': no panic: ' .. err)
end

--- Calls `fn`, which must not raise and must return nil/false, err, kind.
local function rejects(what, fn, want_kind)
  local called, id, err, kind = pcall(fn)
  ok(called, what .. ': raised ' .. tostring(id))
  ok(not id, what .. ': was accepted (id ' .. tostring(id) .. ')')
  clear(err, what)
  if want_kind then
    eq(want_kind, kind, what .. ' (' .. err .. ')')
  end
  return err, kind
end

describe('bad input', function()
  it('wrong types and unknown sync types: invalid, nothing started', function()
    local env = setup()
    for _, ty in ipairs({ 42, true, {}, 'FULL', 'full; touch x', '$(touch x)', '' }) do
      local err = rejects('type ' .. vim.inspect(ty), function()
        return manager.start_sync(ty, { account = 'demo' })
      end, 'invalid')
      ok(err:find('unknown sync type', 1, true), err)
    end
    rejects('no type', function()
      return manager.start_sync()
    end, 'invalid')
    -- Ids the library cannot take (beyond 2^64) cancel nothing, and raise
    -- nothing once it is loaded.
    for _, id in ipairs({ 1e308, 2 ^ 64 }) do
      local called, n = pcall(manager.cancel_sync, id)
      eq({ true, 0 }, { called, n }, 'manager.cancel_sync(' .. id .. ')')
      called, n = pcall(require('himalaya.sync.mbsync').cancel_sync, id)
      eq({ true, 0 }, { called, n }, 'mbsync.cancel_sync(' .. id .. ')')
    end
    local bad_opts = {
      'demo',
      42,
      { account = 42 },
      { account = { 'demo' } },
      { account = { a = 1, b = { 2 } } },
      { account = 'demo', folders = 'INBOX' },
      { account = 'demo', folders = { 1 } },
      { account = 'demo', wait = 'soon' },
      { account = 'demo', wait = -1 },
      { account = 'demo', wait = 1e12 },
      { account = 'demo', wait = 0 / 0 },
      { account = 'demo', on_complete = 'print' },
      { account = 'demo', on_progress = 42 },
      -- A misspelt option must not start a sync of the default account,
      -- nor folders a full sync of every folder.
      { acount = 'demo' },
      { account = 'demo', folder = { 'INBOX' } },
      { account = 'demo', folders = { 'INBOX' } },
    }
    for _, o in ipairs(bad_opts) do
      local err = rejects('options ' .. vim.inspect(o), function()
        return manager.start_sync('full', o)
      end, 'invalid')
      for k in pairs(_G.type(o) == 'table' and o or {}) do
        if k ~= 'account' then
          contains(err, k)
        end
      end
    end
    local misspelt = rejects('sync_full with a misspelt option', function()
      return mbsync.sync_full('demo', { on_complet = function() end })
    end, 'invalid')
    eq('invalid options.on_complet: unknown option (known: on_complete, on_progress, wait)', misspelt)
    for _, o in ipairs({
      { device = 'yes' },
      { devcie = true },
      { true },
      { timeout = '2' },
      { timeout = 0 / 0 },
      { timeout = 1e-300 },
    }) do
      local got, err, kind = require('himalaya.sync.oauth').authorize('demo', o, function() end)
      eq({ nil, 'invalid' }, { got, kind }, 'authorize ' .. vim.inspect(o))
      clear(err, 'authorize ' .. vim.inspect(o))
      if o.devcie then
        eq('invalid opts.devcie: unknown option (known: device, timeout)', err)
      end
    end
    rejects('sync_inbox with options 42', function()
      return mbsync.sync_inbox('demo', 42)
    end, 'invalid')
    -- A bad argument is named as the caller gave it, not as the manager's
    -- option it would become (options.account, options.folders).
    local function names(what, fn, ...)
      local err = rejects(what, fn, 'invalid')
      for _, want in ipairs({ ... }) do
        contains(err, want, what)
      end
      ok(not err:find('options', 1, true), what .. ': ' .. err)
    end
    names('sync_full with account 42', function()
      return mbsync.sync_full(42)
    end, 'invalid account: expected a string, got 42')
    names('sync_inbox with account "\\xff"', function()
      return mbsync.sync_inbox('\xff')
    end, 'invalid account "', '": not UTF-8 text')
    names('sync_folders with folders "INBOX"', function()
      return mbsync.sync_folders('demo', 'INBOX')
    end, 'invalid folders: expected a list of folder names (UTF-8 text), got "INBOX"')
    names('sync_folders with account 42', function()
      return mbsync.sync_folders(42, { 'INBOX' })
    end, 'invalid account: expected a string, got 42')
    rejects('sync_folders with no folders', function()
      return mbsync.sync_folders('demo', {})
    end, 'invalid')
    names('repair_folder with folder { "INBOX" }', function()
      return mbsync.repair_folder('demo', { 'INBOX' })
    end, 'invalid folder { "INBOX" }: expected a folder name (UTF-8 text)')
    names('repair_folder with no folder', function()
      return mbsync.repair_folder('demo', nil)
    end, 'invalid folder nil: expected a folder name')
    names('repair_folder with account false', function()
      return mbsync.repair_folder(false, 'INBOX')
    end, 'invalid account: expected a string, got false')
    env.nothing_started('wrong types')
  end)

  it('unknown accounts and accounts with shell metacharacters or ../: a clear error, nothing started', function()
    local env = setup()
    local err, kind = rejects('unknown account', function()
      return manager.start_sync('full', { account = 'nope' })
    end)
    ok(err:find('nope', 1, true), 'names the account: ' .. err)
    ok(kind == 'config' or kind == 'invalid', 'kind ' .. tostring(kind))
    for _, name in ipairs(vim.list_extend({ '\xff', 'caf\xe9' }, env.names)) do
      for _, ty in ipairs({ 'full', 'inbox', 'check' }) do
        local what = ('%s sync of account %s'):format(ty, vim.inspect(name):sub(1, 60))
        local _, k = rejects(what, function()
          return manager.start_sync(ty, { account = name })
        end)
        ok(k == 'invalid' or k == 'config', what .. ': kind ' .. tostring(k))
      end
    end
    env.nothing_started('bad accounts')
  end)

  it('paths in the configuration expand ~ and $VAR, never a command in backticks', function()
    local env = setup()
    local nasty = env.dir .. '/`touch ' .. env.marker .. '`'
    t.use(env.fx.mbsyncrc, { state_dir = nasty })
    manager.history()
    t.use(nasty, {})
    local id, err = manager.start_sync('full', { account = 'demo' })
    eq(nil, id)
    clear(err, 'an mbsyncrc path with backticks')
    eq(nil, vim.uv.fs_stat(env.marker), 'no command ran')
    env.nothing_started('backticks in paths')
  end)

  it('folder names with ../ or a leading -: invalid, nothing started', function()
    local env = setup()
    for _, folder in ipairs({ '../x', '../../etc', 'Work/../../x', '..', '-a', '--help', '', 'a,b', 'IN\nBOX', '\xff' }) do
      for _, ty in ipairs({ 'folders', 'repair', 'check' }) do
        rejects(('%s sync of folder %s'):format(ty, vim.inspect(folder)), function()
          return manager.start_sync(ty, { account = 'demo', folders = { folder } })
        end, 'invalid')
      end
    end
    env.nothing_started('bad folders')
  end)

  it('folder names with shell metacharacters never reach a shell', function()
    -- `;`, `$( )` and backticks are legal in IMAP folder names, so the
    -- engine may run mbsync for them (here it fails to connect); it must
    -- pass them as one argument (no shell) and end with a one-line error.
    local env = setup()
    for _, folder in ipairs({ '$(touch x)', '$(touch ' .. env.marker .. ')', 'INBOX;touch x', '`touch x`' }) do
      local result, info_or_err, kind = t.sync_and_wait('folders', { account = 'demo', folders = { folder } }, 30000)
      if result then
        ok(result.success or (type(result.error) == 'string' and not result.error:find('\n')), vim.inspect(result))
        if not result.success then
          clear(result.error, 'folder ' .. folder)
        end
      else
        clear(info_or_err, 'folder ' .. folder)
        eq('invalid', kind)
      end
    end
    for _, f in ipairs({ env.marker, env.dir .. '/x', t.root .. '/x' }) do
      eq(0, vim.fn.filereadable(f), f .. ' was not created')
    end
    local runs, overlaps = t.mbsync_runs(env.log)
    eq(4, #runs, 'one mbsync run per folder')
    eq({}, overlaps)
    for _, r in ipairs(runs) do
      ok(r.stop, 'every mbsync run ended')
    end
  end)

  it('lock names with ../ or metacharacters: a clear error, no file outside the lock folder', function()
    local env = setup()
    local dir = assert(lock.lock_dir())
    for _, name in ipairs(vim.list_extend({ '../../pwned', '../x', '/tmp/x', 'a/b' }, env.names)) do
      local what = 'lock ' .. vim.inspect(name):sub(1, 60)
      local called, got, err, kind = pcall(lock.acquire_lock, name, 0)
      ok(called, what .. ': raised ' .. tostring(got))
      if got then
        -- A name the engine accepts must stay a file inside the lock folder.
        lock.release_lock(name)
        ok(not name:find('/', 1, true) and not name:find('..', 1, true), what .. ' was accepted')
      else
        clear(err, what)
        eq('invalid', kind, what)
      end
    end
    eq(0, vim.fn.filereadable(vim.fn.fnamemodify(dir, ':h:h') .. '/pwned'), 'no file above the lock folder')
    eq(0, vim.fn.filereadable(vim.fn.fnamemodify(dir, ':h') .. '/x'), 'no file above the lock folder')
    env.nothing_started('bad lock names')
  end)

  it('callbacks that are not functions: invalid at once, no error later, nothing taken', function()
    setup()
    local oauth = require('himalaya.sync.oauth')
    vim.v.errmsg = ''
    for _, cb in ipairs({ 'print', 42, true, {} }) do
      local what = 'callback ' .. vim.inspect(cb)
      rejects('acquire_lock with ' .. what, function()
        return lock.acquire_lock('bad-callback', 0, cb)
      end, 'invalid')
      rejects('with_lock with ' .. what, function()
        return lock.with_lock('bad-callback', function() end, 0, cb)
      end, 'invalid')
      rejects('get_valid_token with ' .. what, function()
        return oauth.get_valid_token('demo', cb)
      end, 'invalid')
      rejects('store_token with ' .. what, function()
        return oauth.store_token('demo', 'not-a-real-token', cb)
      end, 'invalid')
      rejects('start_sync with on_complete ' .. what, function()
        return manager.start_sync('full', { account = 'demo', on_complete = cb })
      end, 'invalid')
    end
    vim.wait(200)
    eq('', vim.v.errmsg, 'nothing failed on the main loop afterwards')
    eq(false, lock.is_locked('bad-callback'))
  end)

  it('a callback that raises is shown as one notification, on every path, refused-at-once ones too', function()
    setup()
    local oauth = require('himalaya.sync.oauth')
    local seen = t.notifications()
    vim.v.errmsg = ''
    local function boom()
      error('boom from the callback', 0)
    end
    local calls = {
      function()
        return oauth.status('nope', boom)
      end,
      function()
        return oauth.store_token('demo', 42, boom)
      end,
      function()
        return lock.acquire_lock(42, 0, boom)
      end,
      function()
        return lock.with_lock(42, function() end, 0, boom)
      end,
      function()
        return lock.with_lock('raising-callback', function() end, 0, boom)
      end,
    }
    for _, call in ipairs(calls) do
      local called = pcall(call)
      ok(called, 'raised at once')
    end
    t.wait_for(function()
      return #seen >= #calls
    end, 5000, 'a notification per callback')
    vim.wait(100)
    eq(#calls, #seen, vim.inspect(seen))
    for _, n in ipairs(seen) do
      eq('himalaya-sync: error in a callback: boom from the callback', n[1])
      eq(vim.log.levels.ERROR, n[2])
    end
    eq('', vim.v.errmsg, 'no error reached the event loop')
    eq(false, lock.is_locked('raising-callback'))
  end)

  it(':HimalayaSync with bad arguments: an error message, no traceback, nothing started', function()
    local env = setup()
    local seen = {}
    local orig = vim.notify
    vim.notify = function(msg, level)
      seen[#seen + 1] = { msg = msg, level = level }
    end
    t.defer(function()
      vim.notify = orig
    end)
    local cmds = {
      'HimalayaSync nope',
      'HimalayaSync full nope',
      'HimalayaSync full $(touch\\ x)',
      'HimalayaSync inbox `touch\\ x`',
      'HimalayaSync full ../demo',
      'HimalayaSync full -a',
      'HimalayaSync folders demo ../../x',
      'HimalayaSync folders demo -a',
      'HimalayaSync auto maybe',
      'HimalayaSync auto on off',
      'HimalayaSync cancel 3',
      'HimalayaSync status demo',
      'HimalayaSync oauth refresh demo junk',
      'HimalayaSync oauth authorize demo --devcie',
      'HimalayaSync oauth refresh',
      'HimalayaSync full \xff',
      'HimalayaSync folders demo \xff',
      'HimalayaSync full ' .. ('a'):rep(100000),
      'HimalayaSync ' .. ('a'):rep(100000),
    }
    for _, c in ipairs(cmds) do
      seen = {}
      local called, e = pcall(vim.cmd, c)
      ok(called, c .. ': raised ' .. tostring(e))
      ok(#seen >= 1, c .. ': says something')
      local last = seen[#seen]
      eq(vim.log.levels.ERROR, last.level, c .. ': ' .. tostring(last.msg))
      clear(last.msg, c)
    end
    env.nothing_started(':HimalayaSync')
  end)

  it('an mbsyncrc that is a FIFO or a device is refused at once, not waited for', function()
    local env = setup()
    local fifo = env.dir .. '/fifo'
    vim.fn.system({ 'mkfifo', fifo })
    eq(0, vim.v.shell_error, 'mkfifo')
    for _, rc in ipairs({ fifo, '/dev/zero' }) do
      t.use(rc, { mbsync = { cmd = t.mbsync_wrapper(env.log) } })
      local started = vim.uv.hrtime()
      local err, kind = rejects('mbsync.config = ' .. rc, function()
        return manager.start_sync('full', { account = 'demo' })
      end)
      eq('config', kind)
      contains(err, "Cannot open config file '" .. rc .. "': not a regular file")
      ok((vim.uv.hrtime() - started) / 1e6 < 1000, 'answered at once')
    end
    env.nothing_started('a FIFO or device as mbsyncrc')
  end)

  it('a call from a fast event (a libuv callback) is refused with the way out, never raised', function()
    setup()
    local oauth = require('himalaya.sync.oauth')
    local results
    local timer = assert(vim.uv.new_timer())
    timer:start(0, 0, function()
      timer:close()
      local calls = {
        start_sync = function()
          return manager.start_sync('full', { account = 'demo' })
        end,
        history = manager.history,
        get_folder_counts = function()
          return manager.get_folder_counts('demo')
        end,
        list_targets = manager.list_targets,
        oauth_status = function()
          return oauth.status('demo')
        end,
      }
      results = {}
      for name, call in pairs(calls) do
        results[name] = { pcall(call) }
      end
    end)
    t.wait_for(function()
      return results ~= nil
    end, 5000, 'the timer callback')
    for name, r in pairs(results) do
      eq(true, r[1], name .. ' raised: ' .. tostring(r[2]))
      eq(nil, r[2], name)
      contains(r[3], 'cannot be called in a fast event (a libuv callback): call it from vim.schedule()')
    end
    eq('invalid', results.start_sync[4])
    eq('invalid', results.oauth_status[4])
  end)
end)
