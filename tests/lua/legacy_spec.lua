-- The original plugin's require paths (`neotex.plugins.tools.himalaya.sync.*`)
-- called as its code called them, against a real dovecot and real mbsync:
-- `mbsync.sync(channel, { callback = function(success, err) })`, the cancel
-- and status questions answered as booleans, lock names as strings.
local t = require('helpers')
local describe, it, eq, ok = t.describe, t.it, t.eq, t.ok

local PREFIX = 'neotex.plugins.tools.himalaya.sync.'

describe('original require paths', function()
  it('lead to the new modules, with the original functions beside them', function()
    for _, m in ipairs({ 'manager', 'mbsync', 'lock', 'oauth' }) do
      local old, new = require(PREFIX .. m), require('himalaya.sync.' .. m)
      for name, fn in pairs(new) do
        if rawget(old, name) == nil then
          eq(fn, old[name], m .. '.' .. name)
        end
      end
    end
    local manager, mbsync = require(PREFIX .. 'manager'), require(PREFIX .. 'mbsync')
    eq(false, manager.cancel_sync(), 'nothing to cancel is false, not 0')
    eq(false, manager.can_cancel_sync())
    eq(false, mbsync.stop())
    eq(false, mbsync.is_running())
    eq(false, mbsync.is_sync_running())
    eq(true, mbsync.check_mbsync())
    eq(false, require(PREFIX .. 'lock').is_locked())
    local got, err = mbsync.sync('demo', { callback = 'print' })
    eq({ false, 'invalid opts.callback: expected a function' }, { got, err })
    -- Refused before anything starts, not an error in a callback later.
    local oauth = require(PREFIX .. 'oauth')
    eq({ false, 'invalid callback: expected a function, got 5' }, { oauth.refresh('demo', 5) })
    eq({ false, 'invalid callback: expected a function, got "x"' }, { oauth.ensure_token('demo', 'x') })
    eq({ false, 'invalid fn: expected a function, got nil' }, { oauth.refresh_and_retry(nil, 'demo') })
    eq({ nil, 'invalid callback: expected a function, got 5' }, { oauth.load_environment(5) })
  end)

  it("give progress reported from outside the original's fields too", function()
    local manager = require(PREFIX .. 'manager')
    eq(true, manager.update_progress({ percent = 5, box = 'INBOX', boxes = { done = 1, total = 3 } }))
    local p = manager.get_sync_info().progress
    eq({ 'syncing', 'INBOX', 1, 3, 0, 0, 'Synchronizing' }, {
      p.status,
      p.current_folder,
      p.folders_done,
      p.folders_total,
      p.messages_processed,
      p.messages_total,
      p.current_operation,
    })
    eq(5, p.percent)
    -- Each update is kept, not only the first one.
    eq(true, manager.update_progress({ percent = 60, box = 'Sent' }))
    p = manager.get_sync_info().progress
    eq({ 60, 'Sent' }, { p.percent, p.current_folder })
    -- Nothing here can cancel it.
    eq(false, manager.can_cancel_sync())
    -- The original's sidebar shows a running sync with its message.
    eq({ 'external', 'running', 'syncing' }, {
      manager.get_sync_info().type,
      manager.get_sync_info().status,
      manager.get_sync_info().message,
    })
    manager.complete_sync('external', { success = true })
    eq('completed', manager.get_sync_info().progress.status)
    -- An outside sync told only at its end is kept too.
    eq(true, manager.complete_sync('full', { success = false, error = 'boom' }))
    local info = manager.get_sync_info()
    eq({ 0, 'full', 'error', 'boom' }, { info.id, info.type, info.status, info.message })
  end)

  it('start and stop the auto-sync as the original setup did', function()
    local manager = require(PREFIX .. 'manager')
    t.use('/nonexistent/mbsyncrc', { auto_sync = { enabled = false } })
    eq(false, manager.is_auto_sync_running())
    manager.start_auto_sync()
    t.defer(manager.stop_auto_sync)
    eq(true, manager.is_auto_sync_running())
    manager.stop_auto_sync()
    eq(false, manager.is_auto_sync_running())
  end)

  it('mbsync.sync syncs the channel and calls back with (success, err)', function()
    local fx = t.fixture({ '--messages', '300' })
    t.use(fx.mbsyncrc)
    local mbsync, manager, lock = require(PREFIX .. 'mbsync'), require(PREFIX .. 'manager'), require(PREFIX .. 'lock')
    local ended, progress, seen = nil, {}, {}
    local id = mbsync.sync('demo', {
      auto_refresh = true,
      on_progress = function(p)
        progress[#progress + 1] = p
        if not seen.info and mbsync.is_running() then
          seen.info = manager.get_sync_info()
          seen.status_progress = mbsync.get_status().progress
        end
      end,
      callback = function(success, err)
        ended = { success, err }
      end,
    })
    ok(type(id) == 'number', 'an id: ' .. tostring(id))
    t.wait_for(function()
      local locks = lock.get_active_locks()
      if not seen.running and mbsync.is_running() and vim.tbl_contains(locks, 'sync-demo') then
        seen.running = true
        seen.status = mbsync.get_status()
        seen.locked = { lock.is_locked(), lock.is_locked('demo'), lock.is_locked('sync-demo') }
        seen.can_cancel = manager.can_cancel_sync()
      end
      return ended ~= nil
    end, 60000, 'the sync to end')
    eq({ true, nil }, ended)
    ok(#progress > 0, 'progress was reported')
    -- With the original's fields, as its sidebar header read them.
    local downloading
    for _, p in ipairs(progress) do
      eq('syncing', p.status)
      ok(p.folders_done <= p.folders_total and p.messages_processed <= p.messages_total, vim.inspect(p))
      ok(type(p.current_operation) == 'string' and type(p.start_time) == 'number', vim.inspect(p))
      ok(p.boxes and p.near, 'the new fields are kept')
      if p.current_operation == 'Downloading' and p.messages_total > 0 and p.current_folder then
        downloading = p
      end
    end
    ok(downloading, 'a download was reported: ' .. vim.inspect(progress[#progress]))
    eq(downloading.near.new.done, downloading.messages_processed)
    eq(progress[#progress].folders_total, progress[#progress].folders_done)
    eq(300, progress[#progress].total_new)
    eq({ 'running', 'full', 'syncing demo' }, { seen.info.status, seen.info.type, seen.info.message })
    ok(seen.info.progress and seen.status_progress, 'progress while running')
    for _, p in ipairs({ seen.info.progress, seen.status_progress }) do
      eq('syncing', p.status)
      ok(p.folders_total >= 0 and p.messages_total >= 0 and p.current_operation, vim.inspect(p))
    end
    -- Once ended, the progress kept says how.
    eq('completed', manager.get_sync_info().progress.status)
    ok(seen.running, 'seen running')
    eq(true, seen.status.sync_running)
    eq(false, seen.status.external_sync_running, "this Neovim's sync is not another's")
    eq('running', seen.status.status)
    eq({ true, true, true }, seen.locked)
    eq(true, seen.can_cancel)
    t.wait_for(function()
      return not mbsync.is_running()
    end, 5000, 'the sync to be over')
    local status = mbsync.get_status()
    eq({ false, 'idle' }, { status.sync_running, status.status })
    eq(nil, status.last_error)
    ok(type(status.last_sync) == 'number', 'last_sync of this sync: ' .. vim.inspect(status.last_sync))
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    -- Another process's sync, as the original's sidebar asks about it to
    -- show "Syncing (external)"; another process's other locks are not one.
    local other = t.hold_plugin_lock('token-demo', 30)
    eq(false, mbsync.get_status().external_sync_running)
    other.stop()
    other = t.hold_plugin_lock('sync-demo', 30)
    status = mbsync.get_status()
    eq({ false, true }, { status.sync_running, status.external_sync_running })
    other.stop()
    eq(false, mbsync.get_status().external_sync_running)
  end)

  it("the original's sync commands: their manager bookkeeping around mbsync.sync shows one sync", function()
    local fx = t.fixture({ '--messages', '50' })
    t.use(fx.mbsyncrc)
    local manager, mbsync = require(PREFIX .. 'manager'), require(PREFIX .. 'mbsync')
    ---@return integer count, table? outside the syncs of this Neovim, and the one reported from outside
    local function syncs()
      local list = manager.get_sync_info().syncs
      local outside = vim.tbl_filter(function(s)
        return s.id == 0
      end, list)[1]
      return #list, outside and { outside.type, outside.status, outside.end_time }
    end
    local before, outside = syncs()
    -- As the original's HimalayaSyncFull: mark the start, sync, pass the
    -- progress on, tell the end.
    eq(nil, manager.start_sync('full', { channel = 'demo', account = 'demo' }))
    eq(false, manager.is_busy(), 'the mark started nothing')
    local ended, updated, running = nil, {}, nil
    mbsync.sync('demo', {
      on_progress = function(p)
        updated[#updated + 1] = manager.update_progress(p)
        local info = manager.get_sync_info()
        -- What the original's sidebar header reads.
        running = running or info.status == 'running' and { info.type, info.message, info.progress.folders_total }
      end,
      callback = function(success, err)
        ended = { manager.complete_sync('full', { success = success, error = err }), success }
      end,
    })
    t.wait_for(function()
      return ended ~= nil
    end, 30000, 'the sync to end')
    eq({ true, true }, ended)
    ok(#updated > 0 and not vim.tbl_contains(updated, false), vim.inspect(updated))
    eq({ 'full', 'syncing demo' }, { running[1], running[2] })
    ok(running[3] >= 1, 'folders_total: ' .. vim.inspect(running[3]))
    local after, outside_after = syncs()
    eq(before + 1, after, 'one sync more')
    eq(outside, outside_after, 'no sync from outside begun or ended')
    eq('completed', manager.get_sync_info().status)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
  end)

  it("mbsync.himalaya_fast_check counts a folder's new mail as the original's HimalayaFastCheck reads it", function()
    local fx = t.fixture({ '--folders', 'INBOX=4,Archive=2' })
    t.use(fx.mbsyncrc, { notify = { enabled = true } })
    ok(t.sync_and_wait('full', { account = 'demo' }).success)
    fx.deliver('demo', 'INBOX', 3)
    local seen = t.notifications()
    local mbsync = require(PREFIX .. 'mbsync')
    local function fast_check(opts)
      local got
      opts.callback = function(status, err)
        got = { status = status, err = err }
      end
      local id = mbsync.himalaya_fast_check(opts)
      ok(type(id) == 'number', 'an id: ' .. tostring(id))
      t.wait_for(function()
        return got ~= nil
      end, 20000, 'the fast check to call back')
      return got
    end
    local got = fast_check({ auto_refresh = true })
    eq({ has_new = true, new_count = 3, remote_count = 7, local_count = 4 }, got.status)
    -- The callback tells the result: no notification of the check besides.
    eq({}, seen)
    eq(0, fast_check({ account = 'demo', folder = 'Archive' }).status.new_count)
    got = fast_check({ folder = 'Nowhere' })
    eq(nil, got.status)
    ok(type(got.err) == 'string' and got.err ~= '', vim.inspect(got))
    eq({ false, 'invalid opts.callback: expected a function' }, { mbsync.himalaya_fast_check({ callback = 1 }) })
    -- Two checks at once, each telling its end to the original's manager
    -- from what its callback scheduled: neither is taken for an outside sync.
    local manager = require(PREFIX .. 'manager')
    local function outside()
      local o = vim.tbl_filter(function(s)
        return s.id == 0
      end, manager.get_sync_info().syncs)[1]
      return o and { o.type, o.status, o.end_time }
    end
    local before, told = outside(), {}
    -- A check whose callback tells its end to the original's manager from
    -- what it schedules, as the original's HimalayaFastCheck did.
    local function check_telling_end()
      mbsync.himalaya_fast_check({
        callback = function()
          vim.schedule(function()
            told[#told + 1] = manager.complete_sync('fast_check', { success = true })
          end)
        end,
      })
    end
    for _ = 1, 2 do
      check_telling_end()
    end
    t.wait_for(function()
      return #told == 2
    end, 20000, 'both checks to tell their end')
    eq({ true, true }, told)
    eq(before, outside())
    -- The same with both ends in one turn of the event loop, as when two
    -- syncs end in one drain of the engine's events. The manager's
    -- start_sync is stood in for, to hold both ends until then.
    local engine = require('himalaya.sync.manager')
    local start_sync, ends = engine.start_sync, {}
    engine.start_sync = function(_, o)
      ends[#ends + 1] = o.on_complete
      return #ends
    end
    told = {}
    local started, err = pcall(function()
      for _ = 1, 2 do
        check_telling_end()
      end
    end)
    engine.start_sync = start_sync
    ok(started, err)
    eq(2, #ends)
    for _, done in ipairs(ends) do
      done({ success = true, folders = { { new = 0, total = 1 } } })
    end
    t.wait_for(function()
      return #told == 2
    end, 5000, 'both ends to be told')
    eq({ true, true }, told)
    eq(before, outside())
  end)

  it("manager.get_history() gives the original's history, of every account", function()
    local fx = t.fixture({ '--accounts', 'demo,work', '--folders', 'INBOX=2' })
    local manager, mbsync = require(PREFIX .. 'manager'), require(PREFIX .. 'mbsync')
    local function sync(account)
      local ended
      mbsync.sync(account, {
        callback = function(success)
          ended = success
        end,
      })
      t.wait_for(function()
        return ended ~= nil
      end, 60000, 'the sync of ' .. account .. ' to end')
      return ended
    end
    t.use(fx.mbsyncrc)
    local before = manager.get_history().total_syncs_today or 0
    eq(true, sync('demo'))
    local h = manager.get_history()
    ok(math.abs(os.time() - h.last_full_sync) <= 5, vim.inspect(h))
    eq(math.floor(h.last_full_sync), h.last_full_sync, 'whole seconds, as os.time()')
    eq(before + 1, h.total_syncs_today)
    eq(os.date('%Y-%m-%d'), h.last_count_date)

    -- A failed sync of another account: the newest error, whichever account.
    t.use(t.mbsyncrc_on_port(fx, t.closed_port(), 'down'))
    eq(false, sync('work'))
    h = manager.get_history()
    eq(before + 2, h.total_syncs_today)
    ok(type(h.last_error) == 'string' and h.last_error ~= '', vim.inspect(h))
    eq('full', h.last_error_type)
    eq(h.last_full_sync, h.last_error_time)
  end)

  it('a cancelled sync calls back with false and a message; cancel answers true', function()
    local fx = t.fixture({ '--messages', '2000' })
    t.use(fx.mbsyncrc)
    local mbsync, manager = require(PREFIX .. 'mbsync'), require(PREFIX .. 'manager')
    local ended
    mbsync.sync('demo', {
      callback = function(success, err)
        ended = { success, err }
      end,
    })
    t.wait_for(function()
      return mbsync.get_status().status == 'running' or ended ~= nil
    end, 30000, 'the sync to run')
    eq(true, manager.cancel_sync())
    t.wait_for(function()
      return ended ~= nil
    end, 30000, 'the sync to end')
    eq(false, ended[1])
    t.contains(ended[2], 'cancelled')
    t.contains(mbsync.get_status().last_error, 'cancelled')
  end)

  it("the original's OAuth functions answer for the default account, against a real OAuth2 server", function()
    local server = t.oauth_server()
    t.oauth_account(server, 'INBOX=1')
    local oauth = require(PREFIX .. 'oauth')
    oauth.setup()
    -- The state questions answer what was last heard, and ask the store in
    -- the background: first nothing, then no token.
    eq(false, oauth.has_token())
    t.wait_for(function()
      return oauth.get_status().error ~= nil or oauth.get_status().store ~= nil
    end, 10000, 'the store to answer')
    eq(false, oauth.has_token())
    eq(false, oauth.is_valid())
    local function ask(fn, ...)
      local got
      fn(..., function(success, err)
        got = { success, err }
      end)
      t.wait_for(function()
        return got ~= nil
      end, 20000, 'the callback')
      return got
    end
    local failed = ask(oauth.refresh, nil)
    eq(false, failed[1])
    ok(type(failed[2]) == 'string' and failed[2] ~= '', 'a refresh without a token says why')
    t.oauth_authorize(server)
    -- Heard within the state's age limit (5 s).
    t.wait_for(function()
      return oauth.has_token()
    end, 10000, 'has_token to hear of the token')
    -- Asked by name, the account is heard of under that name.
    t.wait_for(function()
      return oauth.is_valid('demo')
    end, 10000, 'is_valid to hear of the token')
    -- In progress from the call to its callback, as the original's flag.
    eq(false, oauth.get_status().refresh_in_progress)
    local during
    oauth.refresh('demo', function()
      during = oauth.get_status().refresh_in_progress
    end)
    eq(true, oauth.get_status().refresh_in_progress)
    t.wait_for(function()
      return during ~= nil
    end, 20000, 'the refresh to end')
    eq(false, during)
    eq(false, oauth.get_status().refresh_in_progress)
    eq({ true, nil }, ask(oauth.refresh, 'demo'))
    eq({ true, nil }, ask(oauth.ensure_token, nil))
    local retried = false
    oauth.refresh_and_retry(function()
      retried = true
    end)
    t.wait_for(function()
      return retried
    end, 20000, 'refresh_and_retry to call fn')
    t.wait_for(function()
      return oauth.get_status().last_refresh > 0
    end, 10000, 'the refresh to be heard of')
    eq(true, oauth.get_status().has_token)
    eq(0, oauth.get_status('nobody').last_refresh)
    eq(false, oauth.get_status('nobody').has_token)
  end)

  it("the original's load_environment() reads the systemd user environment, with or without a callback", function()
    -- The original's setup wizard and health check call it on NixOS.
    local dir = t.tmpdir()
    local secret = t.secret('systemd-client-secret-' .. vim.fn.rand())
    t.script(
      dir,
      'systemctl',
      '[ "$*" = "--user show-environment" ] || exit 3\n'
        .. ('printf "%%s\\n" HOME=/home/u GMAIL_CLIENT_ID=id-1 GMAIL_CLIENT_SECRET=%s OTHER_VAR=kept'):format(secret)
    )
    local path = vim.env.PATH
    vim.env.PATH = dir .. ':' .. path
    t.defer(function()
      vim.env.PATH = path
      vim.env.GMAIL_CLIENT_ID = nil
      vim.env.GMAIL_CLIENT_SECRET = nil
    end)
    local oauth = require(PREFIX .. 'oauth')
    local env = oauth.load_environment()
    eq({ 'id-1', secret, 'kept' }, { env.GMAIL_CLIENT_ID, env.GMAIL_CLIENT_SECRET, env.OTHER_VAR })
    -- Set in Neovim's environment, for what it starts later: the OAuth
    -- variables only.
    eq({ 'id-1', secret }, { vim.env.GMAIL_CLIENT_ID, vim.env.GMAIL_CLIENT_SECRET })
    eq(nil, vim.env.OTHER_VAR)
    eq(true, oauth.get_status().environment_loaded)

    -- With a callback: nothing returned, the table given to it.
    local function called_back()
      local got
      eq(
        nil,
        oauth.load_environment(function(vars)
          got = vars
        end)
      )
      t.wait_for(function()
        return got ~= nil
      end, 5000, 'the callback')
      return got
    end
    vim.env.GMAIL_CLIENT_ID = nil
    eq('id-1', called_back().GMAIL_CLIENT_ID)
    eq('id-1', vim.env.GMAIL_CLIENT_ID)

    -- No systemd: nothing, and no error.
    vim.env.PATH = dir .. '/none'
    eq({}, oauth.load_environment())
    eq({}, called_back())
  end)

  it("the original's token questions never wait for a slow store", function()
    local store = t.tmpdir()
    t.setup_for_test({
      notify = false,
      accounts = {
        slow = {
          oauth = {
            provider = 'generic',
            client_id = 'x',
            auth_url = 'http://127.0.0.1:9/auth',
            token_url = 'http://127.0.0.1:9/token',
            store = {
              backend = 'command',
              load_cmd = 'sleep 3; cat ' .. store .. '/t',
              save_cmd = 'cat > ' .. store .. '/t',
            },
          },
        },
      },
    })
    local oauth = require(PREFIX .. 'oauth')
    local started = vim.uv.hrtime()
    for _ = 1, 3 do
      oauth.has_token('slow')
      oauth.is_valid('slow')
      oauth.get_status('slow')
    end
    local ms = (vim.uv.hrtime() - started) / 1e6
    ok(ms < 1000, ('answered from what was heard, not after the 3 s store: %d ms'):format(ms))
  end)
end)
