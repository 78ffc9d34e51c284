local t = require('helpers')
local describe, it, eq, ok, contains = t.describe, t.it, t.eq, t.ok, t.contains

local manager = require('himalaya.sync.manager')

describe('manager', function()
  it('is idle before anything ran, without loading the library', function()
    local info = manager.get_sync_info()
    eq('idle', info.status)
    eq({}, info.syncs)
    -- A cancel says why nothing stopped, still without the library.
    eq({ 0, 'sync #99 is not running or waiting in this Neovim' }, { manager.cancel_sync(99) })
    eq({ 0 }, { manager.cancel_sync() })
    -- No exact whole number (2^63 became "#-9223372036854775808").
    eq({ 0, 'invalid sync id 9.2233720368548e+18: expected a whole number' }, { manager.cancel_sync(2 ^ 63) })
    -- A name that is no text is named as the account.
    local counts, err = manager.get_folder_counts('\255')
    eq(nil, counts)
    ok(vim.startswith(err, 'invalid account ') and vim.endswith(err, ': not UTF-8 text'), err)
    eq(false, require('himalaya.sync.native').is_loaded())
  end)

  it('the accounts auto-sync takes cover every channel once: no group that another group covers', function()
    local rc = t.tmpdir() .. '/mbsyncrc'
    t.write(
      rc,
      table.concat({
        'IMAPStore r\nHost h\nUser u\nPass p\n',
        'MaildirStore l\nPath /m/\n',
        'Channel a\nFar :r:\nNear :l:\nPatterns *\n',
        'Channel b\nFar :r:\nNear :l:\nPatterns *\n',
        'Channel c\nFar :r:\nNear :l:\nPatterns *\n',
        'Group part\nChannels a b:INBOX,Sent\n',
        'Group both\nChannels a b\n',
      }, '\n')
    )
    t.setup_for_test({ mbsync = { config = rc } })
    eq({ 'c', 'both' }, (manager.whole_accounts()))
  end)

  it('a User autocommand with a wildcard pattern hears the events', function()
    local seen = {}
    local au = vim.api.nvim_create_autocmd('User', {
      pattern = 'HimalayaSync*',
      callback = function(ev)
        seen[#seen + 1] = ev.match
      end,
    })
    manager.update_progress({ percent = 10, box = 'INBOX' })
    vim.wait(100, function()
      return #seen > 0
    end)
    vim.api.nvim_del_autocmd(au)
    eq({ 'HimalayaSyncUpdate' }, seen)
  end)

  it('other code can report progress and completion into it', function()
    local seen = {}
    vim.api.nvim_create_autocmd('User', {
      pattern = 'HimalayaSyncUpdate',
      callback = function(ev)
        seen[#seen + 1] = ev.data.status
      end,
    })
    manager.update_progress({ percent = 40, box = 'INBOX' })
    vim.wait(50, function()
      return #seen == 1
    end)
    local info = manager.get_sync_info()
    eq('running', info.status)
    eq(40, info.progress.percent)
    eq('sync external 40%', manager.statusline())
    eq(true, manager.is_busy())
    manager.complete_sync('inbox', { success = true, duration = 1.5 })
    info = manager.get_sync_info()
    eq('completed', info.status)
    eq('inbox', info.type)
    eq(1.5, info.result.duration)
    ok(info.end_time)
    vim.wait(50, function()
      return #seen == 2
    end)
    eq({ 'running', 'completed' }, seen)
    manager.complete_sync('inbox', { success = false, error = 'boom' })
    eq('error', manager.get_sync_info().status)
    eq('boom', manager.get_sync_info().message)
    eq({ kind = 'unknown', message = 'boom', line = 'boom' }, manager.get_sync_info().error)
    eq('sync inbox: unknown error', manager.statusline())
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local status = vim.api.nvim_exec2('HimalayaSync status', { output = true }).output
    contains(status, '#0 inbox (reported from outside): error - boom')
    -- The next outside sync starts clean.
    manager.update_progress({ percent = 5 })
    eq({ 'running', 'external' }, { manager.get_sync_info().status, manager.get_sync_info().type })
    eq({}, { manager.get_sync_info().error, manager.get_sync_info().result, manager.get_sync_info().end_time })
    manager.complete_sync('inbox', { success = true })
    eq(nil, manager.get_sync_info().error)
    eq('', manager.statusline())
  end)

  it('a listener that unsubscribes itself does not make the next one miss the update', function()
    local calls = { 0, 0, 0 }
    local unsubscribe = {}
    for i = 1, 3 do
      unsubscribe[i] = manager.on_update(function()
        calls[i] = calls[i] + 1
        if i == 2 then
          unsubscribe[2]()
        end
      end)
    end
    t.defer(function()
      unsubscribe[1]()
      unsubscribe[3]()
    end)
    for percent = 10, 20, 10 do
      manager.update_progress({ percent = percent })
      local before = calls[1]
      vim.wait(200, function()
        return calls[1] > before
      end)
    end
    manager.complete_sync('external', { success = true })
    vim.wait(200, function()
      return calls[1] == 3
    end)
    eq({ 3, 1, 3 }, calls)
  end)

  it('refuses bad outside progress, results and listeners, and keeps working', function()
    local cases = {
      { manager.update_progress, { 42 }, 'progress' },
      { manager.update_progress, { { percent = 'abc' } }, 'percent' },
      { manager.update_progress, { { percent = 0 / 0 } }, 'percent' },
      { manager.update_progress, { { percent = math.huge } }, 'percent' },
      { manager.update_progress, { { percent = 50, near = {}, box = 3 } }, 'box' },
      { manager.update_progress, { { near = { new = {} } } }, 'near.new' },
      { manager.update_progress, { { boxes = 2 } }, 'invalid progress: boxes 2: expected {done = n, total = n}' },
      { manager.update_progress, { { channels = { done = 1 } } }, 'channels' },
      { manager.update_progress, { { far = { expunge = 3 } } }, 'far.expunge 3' },
      { manager.update_progress, { { truncated = 'yes' } }, 'truncated "yes": expected true or false' },
      { manager.update_progress, { { truncated = 2 } }, 'truncated 2' },
      { manager.complete_sync, { 'x', 42 }, 'result' },
      { manager.complete_sync, { 42, {} }, 'type' },
      { manager.complete_sync, { ('a'):rep(1e6), {} }, 'type' },
      { manager.complete_sync, { 'x\ny', {} }, 'type' },
      { manager.complete_sync, { 'full', { error = ('e'):rep(2000) } }, 'result.error' },
      { manager.update_progress, { { box = ('b'):rep(1e6) } }, 'box' },
      { manager.update_progress, { { box = 'x\n\0y' } }, 'box' },
      { manager.complete_sync, { 'full', { success = false, error = {} } }, 'result.error' },
      { manager.on_update, { 42 }, 'listener' },
      -- Misspelt fields, named as start_sync names a misspelt option.
      { manager.update_progress, { { percnt = 20 } }, 'invalid progress.percnt: unknown field (known: box, ' },
      { manager.update_progress, { { near = { nwe = { done = 1, total = 2 } } } }, 'progress.near.nwe: unknown field' },
      { manager.complete_sync, { 'x', { sucess = true } }, 'invalid result.sucess: unknown field (known: ' },
      {
        manager.complete_sync,
        { 'x', { duration = 'x' } },
        'invalid result.duration "x": expected a number of seconds',
      },
      { manager.complete_sync, { 'x', { pulled = 1.5 } }, 'invalid result.pulled 1.5: expected a whole number' },
      { manager.complete_sync, { 'x', { attempts = -1 } }, 'invalid result.attempts -1' },
      { manager.complete_sync, { 'x', { waited = 0 / 0 } }, 'invalid result.waited' },
      { manager.complete_sync, { 'x', { kind = {} } }, 'invalid result.kind {}' },
    }
    for _, c in ipairs(cases) do
      local called, okv, err, kind = pcall(c[1], unpack(c[2]))
      eq(true, called, c[3] .. ': raised ' .. tostring(okv))
      ok(not okv, c[3] .. ': accepted')
      eq('invalid', kind, c[3])
      contains(err, c[3])
    end
    -- Nothing bad was stored: the status line and status still work.
    for _, s in ipairs(manager.get_sync_info().syncs) do
      ok(s.type ~= 'x', 'a refused result was recorded: ' .. vim.inspect(s))
    end
    eq(true, manager.update_progress({ percent = 50, near = {} }))
    contains(manager.statusline(), '50%')
    local called, e = pcall(require('himalaya.sync.commands').run, { fargs = { 'status' } })
    ok(called, tostring(e))
    eq(true, manager.complete_sync('full', { success = true }))
    eq('completed', manager.get_sync_info().status)
    -- Every field of a Progress (as mbsync.parse_progress_line gives it)
    -- and of a Result is known.
    local c = { done = 0, total = 1 }
    local side = { new = c, flags = c, trash = c, expunge = c }
    eq(
      true,
      manager.update_progress({
        channels = c,
        boxes = c,
        far = side,
        near = side,
        truncated = false,
        percent = 50,
        box = 'INBOX',
      })
    )
    eq(
      true,
      manager.complete_sync('full', {
        success = false,
        error = 'boom',
        kind = 'network',
        duration = 1,
        waited = 0,
        attempts = 1,
        pulled = 0,
        pushed = 0,
        flags_changed = 0,
        trashed = 0,
      })
    )
  end)

  it('rejects bad options with the field named', function()
    local _, err, kind = manager.start_sync('full', { on_complete = 'nope' })
    eq('invalid', kind)
    ok(err:find('on_complete'), err)
    _, err = manager.start_sync('full', { folders = { 1, 2 } })
    ok(err:find('folders'), err)
    _, err = manager.start_sync('full', { wait = -1 })
    ok(err:find('wait'), err)
    _, err = manager.start_sync('full', 'demo')
    ok(err:find('options'), err)
  end)

  it('setup() with an invalid g:himalaya_sync names it there, and changes nothing', function()
    local config = require('himalaya.sync.config')
    local auto = require('himalaya.sync.auto')
    require('himalaya.sync').setup({ auto_sync = { enabled = true, interval = 30 } })
    t.defer(function()
      vim.g.himalaya_sync = nil
      require('himalaya.sync').setup({})
    end)
    eq(true, auto.is_enabled())
    vim.g.himalaya_sync = { retry = { base = 'x' } }
    local fine, err = pcall(require('himalaya.sync').setup, { auto_sync = { enabled = true, interval = 5 } })
    eq(false, fine)
    contains(err, 'invalid config g:himalaya_sync.retry.base: ')
    eq(true, auto.is_enabled(), 'auto-sync still runs')
    vim.g.himalaya_sync = nil
    eq(30, config.get().auto_sync.interval, 'the refused options were not stored')
  end)

  it('invalid configuration is reported with the field path, not a traceback', function()
    vim.g.himalaya_sync = { mbsync = { timeout = 'soon' } }
    t.defer(function()
      vim.g.himalaya_sync = nil
    end)
    local id, err = manager.start_sync('full', { account = 'demo' })
    eq(nil, id)
    ok(err:find('himalaya_sync.mbsync.timeout', 1, true), err)
    ok(err:find('"soon"', 1, true), err)
    -- What follows is about setup()'s own options.
    vim.g.himalaya_sync = nil
    local ok2, e = pcall(require('himalaya.sync').setup, { acounts = {} })
    eq(false, ok2)
    ok(e:find('himalaya_sync.acounts', 1, true), e)
    ok(not e:find('traceback'), e)
    -- Not a number compares false with every bound: still refused.
    for _, field in ipairs({ 'jitter', 'base', 'factor', 'cap', 'max_attempts' }) do
      local bad, msg = pcall(require('himalaya.sync').setup, { retry = { [field] = 0 / 0 } })
      eq(false, bad, field)
      ok(msg:find('himalaya_sync.retry.' .. field, 1, true), msg)
    end
    -- Refused by setup() as the engine would refuse them at the first sync.
    local refused = {
      { { accounts = { ['-x'] = {} } }, 'himalaya_sync.accounts' },
      { { accounts = { ['a..b'] = {} } }, 'himalaya_sync.accounts' },
      { { accounts = { [('a'):rep(101)] = {} } }, 'himalaya_sync.accounts' },
      { { auto_sync = { accounts = { 'x\255' } } }, 'himalaya_sync.auto_sync.accounts[1]' },
      { { idle = { accounts = { '-a' } } }, 'himalaya_sync.idle.accounts[1]' },
      { { lock_dir = 'relative/locks' }, 'himalaya_sync.lock_dir' },
      { { max_parallel = 1e308 }, 'himalaya_sync.max_parallel' },
      { { retry = { max_attempts = 2 ^ 32 } }, 'himalaya_sync.retry.max_attempts' },
      { { accounts = { demo = { throttle = { kbps = 2 ^ 40 } } } }, 'himalaya_sync.accounts.demo.throttle' },
      { { auto_sync = { interval = 1e-9 } }, 'himalaya_sync.auto_sync.interval: expected minutes from 1/60' },
      { { mbsync = { timeout = 1e-300 } }, 'himalaya_sync.mbsync.timeout: expected seconds from 1 to 86400' },
      -- Paths, programs, targets and arguments: no control characters, no
      -- option where mbsync takes a name.
      { { state_dir = '/a\0b' }, 'himalaya_sync.state_dir: expected an absolute folder path' },
      -- Shared by every Neovim: not wherever one was started.
      { { state_dir = 'rel/state' }, 'himalaya_sync.state_dir: expected an absolute folder path' },
      { { state_dir = '$HIMALAYA_UNSET_VAR/state' }, 'himalaya_sync.state_dir: expected an absolute folder path' },
      { { lock_dir = '/tmp/a\nb' }, 'himalaya_sync.lock_dir' },
      { { mbsync = { config = ('a'):rep(5000) } }, 'himalaya_sync.mbsync.config: expected a file path' },
      { { mbsync = { cmd = 'mbsync\0' } }, 'himalaya_sync.mbsync.cmd' },
      { { mbsync = { extra_args = { 'a\0b' } } }, 'himalaya_sync.mbsync.extra_args[1]' },
      {
        { mbsync = { extra_args = { '-Dn' } } },
        'extra_args[1]: expected an argument that leaves mbsync syncing and printing its progress (this one asks for debug output), got "-Dn"',
      },
      {
        { mbsync = { extra_args = { '-V', '--quiet' } } },
        'extra_args[2]: expected an argument that leaves mbsync syncing',
      },
      { { mbsync = { extra_args = { '-c', 'x' } } }, 'asks for a config file (set mbsync.config)' },
      { { mbsync = { extra_args = { '-l' } } }, 'a folder listing instead of a sync' },
      { { mbsync = { extra_args = { '-Vl' } } }, 'a folder listing instead of a sync' },
      { { mbsync = { extra_args = { '-qq' } } }, 'quiet output' },
      { { mbsync = { extra_args = { '-v' } } }, 'no sync at all (-v is the version' },
      { { mbsync = { extra_args = { '--help' } } }, 'no sync at all' },
      { { mbsync = { extra_args = { '-Vh' } } }, 'no sync at all' },
      { { mbsync = { extra_args = { '--dry-run' } } }, 'a dry run' },
      { { mbsync = { extra_args = { '-e' } } }, 'other exit codes' },
      { { mbsync = { extra_args = { '-a' } } }, 'every channel' },
      { { mbsync = { extra_args = { '--all' } } }, 'every channel' },
      {
        { mbsync = { extra_args = { '-X', 'other' } } },
        'extra_args[2]: expected an argument that leaves mbsync syncing and printing its progress (this one asks for a channel or group',
      },
      {
        { accounts = { demo = { inbox = '--help' } } },
        'himalaya_sync.accounts.demo.inbox: expected an mbsync channel',
      },
      { { accounts = { demo = { full = 'a\nb' } } }, 'himalaya_sync.accounts.demo.full' },
      { { accounts = { 'demo' } }, 'himalaya_sync.accounts: expected a table keyed by account name' },
      -- From Vimscript, where a value may be v:null: said so.
      { { mbsync = { config = vim.NIL } }, 'himalaya_sync.mbsync.config: expected a file path, got v:null' },
      {
        { accounts = { ['café'] = { oauth = { provider = 'google', client_id = 'x' } } } },
        'himalaya_sync.accounts.café.oauth: expected an account whose name is ASCII',
      },
      { { accounts = { demo = { folders = { 'INBOX', '-x' } } } }, 'himalaya_sync.accounts.demo.folders[2]' },
    }
    -- A table shown in the message stays on one line.
    refused[#refused + 1] = { { accounts = { demo = { throttle = { kbps = -1 } } } }, 'got { kbps = -1 }' }
    for _, c in ipairs(refused) do
      local bad, msg = pcall(require('himalaya.sync').setup, c[1])
      eq(false, bad, vim.inspect(c[1]))
      contains(msg, c[2])
      ok(not msg:find('\n'), msg)
    end
    for _, good in ipairs({
      { accounts = { ['café'] = {}, ['me@x.org+1'] = {} } },
      { lock_dir = '~/locks' },
      { state_dir = '~/state' },
      { state_dir = '$HOME/state' },
      -- What to propagate, per side: options mbsync syncs with.
      { mbsync = { extra_args = { '--pull', '-Cn', '-X', '--expunge-far', '-V', '--' } } },
    }) do
      local fine, msg = pcall(require('himalaya.sync.config').setup, good)
      ok(fine, msg)
    end
    require('himalaya.sync.config').setup({})
  end)

  it('a bad secret, command or unknown key is named with its type, never its value', function()
    local config = require('himalaya.sync.config')
    t.defer(function()
      vim.g.himalaya_sync = nil
      config.setup({})
    end)
    local secret = t.secret('GOCSPX-TopSecret123')
    local number = 987654321987
    t.secret(tostring(number))
    local function oauth(o)
      return { accounts = { demo = { oauth = o } } }
    end
    local hidden = {
      -- A typo of a secret's key: an unknown key.
      { oauth({ client_secrte = secret }), 'himalaya_sync.accounts.demo.oauth.client_secrte', 'got a string' },
      { oauth({ client_secret = number }), 'himalaya_sync.accounts.demo.oauth.client_secret', 'got a number' },
      { oauth({ client_secret = { secret } }), 'himalaya_sync.accounts.demo.oauth.client_secret', 'got a table' },
      { oauth({ client_secret_cmd = number }), 'oauth.client_secret_cmd', 'got a number' },
      { oauth({ refresh_cmd = { 'pass', secret } }), 'oauth.refresh_cmd', 'got a table' },
      { oauth({ store = { key_cmd = number } }), 'oauth.store.key_cmd', 'got a number' },
      { oauth({ store = { load_cmd = false, backend = 'command' } }), 'oauth.store.load_cmd', 'got a boolean' },
      { oauth({ store = { save_cmd = number } }), 'oauth.store.save_cmd', 'got a number' },
      { oauth({ store = { clear_cmd = number } }), 'oauth.store.clear_cmd', 'got a number' },
      { oauth({ store = { pasword = secret } }), 'oauth.store.pasword', 'got a string' },
      { oauth({ store = secret }), 'himalaya_sync.accounts.demo.oauth.store', 'got a string' },
      { oauth(secret), 'himalaya_sync.accounts.demo.oauth', 'got a string' },
      { { accounts = { demo = secret } }, 'himalaya_sync.accounts.demo', 'got a string' },
      { { accounts = { demo = { password = secret } } }, 'himalaya_sync.accounts.demo.password', 'got a string' },
      {
        { accounts = { demo = { refresh = 'pass ' .. secret } } },
        'himalaya_sync.accounts.demo.refresh',
        'got a string',
      },
      { { token = secret }, 'himalaya_sync.token', 'got a string' },
      { { notify = { token = secret } }, 'himalaya_sync.notify.token', 'got a string' },
      { { mbsync = { password = number } }, 'himalaya_sync.mbsync.password', 'got a number' },
    }
    for _, c in ipairs(hidden) do
      local bad, msg = pcall(config.setup, c[1])
      eq(false, bad, c[2])
      contains(msg, c[2] .. ': expected ')
      contains(msg, c[3])
      ok(not msg:find(secret, 1, true) and not msg:find(tostring(number), 1, true), c[2] .. ': value hidden')
    end
    -- Through g:himalaya_sync, where a sync start reports it.
    vim.g.himalaya_sync = oauth({ client_secret = number })
    local id, err, kind = manager.start_sync('full', { account = 'demo' })
    eq({ nil, 'config' }, { id, kind })
    contains(err, 'oauth.client_secret: expected a client secret, got a number')
    ok(not err:find(tostring(number), 1, true), err)
    vim.g.himalaya_sync = nil
    -- Values of harmless fields are still shown: they say what is wrong.
    local shown = {
      { { auto_sync = { interval = 0 } }, 'got 0' },
      { { retry = { max_attempts = -3 } }, 'got -3' },
      { { uidvalidity = 'fix' }, 'got "fix"' },
      { oauth({ provider = 'gogle' }), 'got "gogle"' },
      { oauth({ margin = -5 }), 'got -5' },
      { oauth({ store = { backend = 'kwallet' } }), 'got "kwallet"' },
      { { notify = { start = 'yes' } }, 'got "yes"' },
    }
    for _, c in ipairs(shown) do
      local bad, msg = pcall(config.setup, c[1])
      eq(false, bad, vim.inspect(c[1]))
      contains(msg, c[2])
    end
    -- Rules that tie fields together fail at setup() too: at the first
    -- sync they would stop every account's syncs, not only this one's.
    local whole = {
      { oauth({}), 'himalaya_sync.accounts.demo.oauth: expected a provider or a refresh_cmd in it, got a table' },
      {
        oauth({ provider = 'generic', client_secret = secret, client_secret_env = 'SECRET' }),
        'oauth: expected only one of client_secret, client_secret_env and client_secret_cmd, got a table',
      },
      {
        oauth({ provider = 'google', store = { backend = 'gpg' } }),
        'oauth.store.recipient: expected a value (store.backend = "gpg" needs it), got nothing',
      },
      {
        oauth({ refresh_cmd = 'x', store = { backend = 'command', load_cmd = 'x' } }),
        'oauth.store.save_cmd: expected a value (store.backend = "command" needs it), got nothing',
      },
    }
    for _, c in ipairs(whole) do
      local bad, msg = pcall(config.setup, c[1])
      eq(false, bad, vim.inspect(c[1]))
      contains(msg, c[2])
      ok(not msg:find(secret, 1, true), msg)
    end
    -- They hold for the merged configuration: g:himalaya_sync and setup()
    -- may each give a part.
    vim.g.himalaya_sync = oauth({ provider = 'google', store = { backend = 'gpg' } })
    t.defer(function()
      vim.g.himalaya_sync = nil
      config.setup({})
    end)
    config.setup(oauth({ store = { recipient = 'me@example.org' } }))
    eq('me@example.org', config.get().accounts.demo.oauth.store.recipient)
    vim.g.himalaya_sync = oauth({ provider = 'generic', client_secret_env = 'SECRET' })
    local bad, msg = pcall(config.setup, oauth({ client_secret_cmd = 'pass show x' }))
    eq(false, bad)
    contains(msg, 'oauth: expected only one of client_secret, client_secret_env and client_secret_cmd')
    config.setup({})
    bad, msg = pcall(config.get)
    eq(true, bad, msg)
    vim.g.himalaya_sync = oauth({ provider = 'google', store = { backend = 'gpg' } })
    bad, msg = pcall(config.get)
    eq(false, bad)
    contains(msg, 'oauth.store.recipient: expected a value')
  end)

  it('notify = true or false in one layer keeps the notify fields of the others', function()
    local config = require('himalaya.sync.config')
    t.defer(function()
      vim.g.himalaya_sync = nil
      config.setup({})
    end)
    local function notify_with(g, opts)
      vim.g.himalaya_sync = g
      config.setup(opts)
      return config.get().notify
    end
    local defaults = config.defaults.notify
    eq(
      vim.tbl_extend('force', defaults, { start = true }),
      notify_with({ notify = true }, { notify = { start = true } })
    )
    eq(
      vim.tbl_extend('force', defaults, { enabled = false, start = true }),
      notify_with({ notify = false }, { notify = { start = true } })
    )
    eq(
      vim.tbl_extend('force', defaults, { enabled = false, start = true }),
      notify_with({ notify = { start = true } }, { notify = false })
    )
    eq(vim.tbl_extend('force', defaults, { enabled = false }), notify_with(nil, { notify = false }))
  end)

  it("Vimscript's 0 and 1 are false and true wherever a boolean is expected, other numbers are refused", function()
    local config = require('himalaya.sync.config')
    t.defer(function()
      vim.g.himalaya_sync = nil
      config.setup({})
    end)
    local progress = { truncated = 1, percent = 10 }
    eq(true, manager.update_progress(progress))
    eq(true, manager.get_sync_info().progress.truncated)
    eq(1, progress.truncated, "the caller's table is left as given")
    manager.complete_sync('external', { success = true })
    vim.cmd([[let g:himalaya_sync = {'log': 0, 'responsive': 1, 'legacy_commands': 0,
      \ 'auto_sync': {'enabled': 0, 'smart': 1}, 'idle': {'enabled': v:false},
      \ 'notify': {'enabled': 1, 'start': 1, 'error': 0}}]])
    local cfg = config.get()
    eq({ false, true, false }, { cfg.log, cfg.responsive, cfg.legacy_commands })
    eq({ false, true, false }, { cfg.auto_sync.enabled, cfg.auto_sync.smart, cfg.idle.enabled })
    eq({ enabled = true, start = true, success = true, error = false, auto = false }, cfg.notify)
    -- Normalised in a copy: what was read stays as it is, and is still
    -- recognised as unchanged.
    eq(0, vim.g.himalaya_sync.log)
    ok(config.get() == cfg, 'the merged configuration is reused')
    -- notify = 0 is notify = false: the other layer's fields stay.
    local opts = { notify = 0 }
    config.setup(opts)
    eq(0, opts.notify, "setup()'s table is left as given")
    eq({ enabled = false, start = true, success = true, error = false, auto = false }, config.get().notify)
    vim.g.himalaya_sync = nil
    for _, c in ipairs({
      { { auto_sync = { enabled = 2 } }, 'himalaya_sync.auto_sync.enabled: expected true or false, got 2' },
      { { log = -1 }, 'himalaya_sync.log: expected true or false, got -1' },
      { { idle = { enabled = 0.5 } }, 'himalaya_sync.idle.enabled: expected true or false, got 0.5' },
      { { responsive = '1' }, 'himalaya_sync.responsive: expected true or false, got "1"' },
      { { notify = 2 }, 'himalaya_sync.notify: expected true, false or a table, got 2' },
      { { notify = { success = 3 } }, 'himalaya_sync.notify.success: expected true or false, got 3' },
    }) do
      local fine, msg = pcall(config.setup, c[1])
      eq(false, fine, vim.inspect(c[1]))
      contains(msg, c[2])
    end
  end)

  it('the plugin file starts nothing for a Vimscript 0, and still reports a bad value at startup', function()
    local out = t.nvim_lua(([[
vim.opt.rtp:prepend(%q)
local notes = {}
vim.notify = function(msg)
  notes[#notes + 1] = msg
end
local function startup(g)
  vim.g.loaded_himalaya_sync = nil
  vim.cmd('let g:himalaya_sync = ' .. g)
  vim.cmd('runtime plugin/himalaya-sync.vim')
end
startup("{'auto_sync': {'enabled': 0}, 'idle': {'enabled': 0}, 'legacy_commands': 0}")
local loaded = package.loaded['himalaya.sync.config'] ~= nil
startup("{'auto_sync': {'enabled': 0}, 'legacy_commands': 1}")
local legacy = vim.fn.exists(':HimalayaSyncFull') == 2
local auto = package.loaded['himalaya.sync.auto'] ~= nil
local before = #notes
startup("{'auto_sync': {'enabled': 2}}")
io.stdout:write(vim.json.encode({
  loaded = loaded,
  legacy = legacy,
  auto = auto,
  notes_before = before,
  notes = notes,
}))
]]):format(t.root))
    local got = vim.json.decode(out)
    eq(false, got.loaded, 'all off: no module loaded')
    eq(true, got.legacy, 'legacy commands on')
    eq(false, got.auto, 'auto-sync not started')
    eq(0, got.notes_before, vim.inspect(got.notes))
    eq(1, #got.notes, vim.inspect(got.notes))
    contains(got.notes[1], 'himalaya_sync.auto_sync.enabled: expected true or false, got 2')
  end)

  it('with no account given and several in the mbsyncrc, asks which, unless one group covers them', function()
    local rc = t.tmpdir() .. '/rc'
    local channels =
      'MaildirStore a\nPath /tmp/a/\n\nMaildirStore b\nPath /tmp/b/\n\nChannel one\nFar :a:\nNear :b:\n\nChannel two\nFar :a:\nNear :b:\n'
    t.write(rc, channels)
    vim.g.himalaya_sync = { mbsync = { config = rc }, notify = false }
    local id, err, kind = manager.start_sync('full')
    eq(nil, id)
    eq('config', kind)
    eq('which account? one of: one, two', err)
    -- `Group all` over both: what mbsync -a syncs, and what the <Plug>
    -- mappings and :HimalayaSync full then sync.
    t.write(rc, channels .. '\nGroup all\nChannel one\nChannel two\n')
    eq('all', manager.default_account())
    -- Two groups that cover everything between them: which one is asked.
    t.write(rc, channels .. '\nGroup x\nChannel one\n\nGroup y\nChannel two\n')
    eq({ nil, 'which account? one of: one, two, x, y' }, { manager.default_account() })
  end)

  it('a manager loaded again by a plugin reloader takes its events over, not twice', function()
    -- In a Neovim of its own: the reload replaces this file's manager.
    local dir = t.tmpdir()
    -- It notes the lock folder it was told of: mbsync's PassCmd (the
    -- token command) must take its OAuth lock in the folder Neovim uses.
    local ok_mbsync = t.script(dir, 'ok-mbsync', ('printf %%s "$HIMALAYA_SYNC_LOCK_DIR" > %s/seen; exit 0'):format(dir))
    local rc = t.standalone_mbsyncrc(dir, t.closed_port())
    local stdout = t.nvim_lua(([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = { mbsync = { config = %q, cmd = %q }, notify = false }
local completed = 0
vim.api.nvim_create_autocmd('User', {
  pattern = 'HimalayaSyncCompleted',
  callback = function()
    completed = completed + 1
  end,
})
local function sync(manager)
  local done
  assert(manager.start_sync('full', { on_complete = function() done = true end }))
  assert(vim.wait(10000, function() return done end), 'the sync')
  vim.wait(200)
end
sync(require('himalaya.sync.manager'))
package.loaded['himalaya.sync.manager'] = nil
sync(require('himalaya.sync.manager'))
io.stdout:write(tostring(completed))
]]):format(t.root, rc, ok_mbsync))
    eq('2', stdout, 'one Completed event per sync')
  end)

  it('modules loaded again by a plugin reloader keep timers, syncs, listeners and setup()', function()
    -- In a Neovim of its own. Before, each new copy started from nothing:
    -- the old auto-sync and IDLE timers ran on out of reach, and a sync
    -- started before the reload lost its callback and listeners.
    local dir = t.tmpdir()
    local slow_mbsync = t.script(dir, 'slow-mbsync', 'sleep 1\nexit 0')
    local rc = t.standalone_mbsyncrc(dir, t.closed_port())
    local stdout = t.nvim_lua(([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = { mbsync = { config = %q, cmd = %q }, notify = false }
local out = {}
local function reload(name)
  package.loaded[name] = nil
  return require(name)
end
-- Every timer made from here on is counted while it runs. (Not with
-- vim.uv.walk: Debian's luv asserts on the handles Neovim made itself.)
local made = setmetatable({}, { __mode = 'k' })
local new_timer = vim.uv.new_timer
vim.uv.new_timer = function(...)
  local h = new_timer(...)
  if h then
    made[h] = true
  end
  return h
end
local function timers()
  local n = 0
  for h in pairs(made) do
    if not h:is_closing() and h:is_active() then
      n = n + 1
    end
  end
  return n
end
local base = timers()

require('himalaya.sync.config').setup({ uidvalidity = 'ask' })
out.setup_kept = reload('himalaya.sync.config').get().uidvalidity

local manager = require('himalaya.sync.manager')
local updates, completed = 0, 0
manager.on_update(function()
  updates = updates + 1
end)
local id = assert(manager.start_sync('full', {
  on_complete = function()
    completed = completed + 1
  end,
}))
vim.wait(200)
manager = reload('himalaya.sync.manager')
out.running_seen = manager.get_sync_info().status
out.statusline = manager.statusline()
package.loaded['himalaya.sync.manager'] = nil
out.init_statusline = reload('himalaya.sync').statusline()
manager = require('himalaya.sync.manager')
local before = updates
vim.wait(10000, function()
  return completed > 0
end)
vim.wait(200)
out.completed, out.listener_called = completed, updates > before
out.final = manager.get_sync_info().syncs[1].status
out.id_kept = manager.get_sync_info().syncs[1].id == id

local auto = require('himalaya.sync.auto')
auto.start()
auto.tick()
auto = reload('himalaya.sync.auto')
out.auto_enabled, out.auto_leader = auto.is_enabled(), auto.is_leader()
auto.start()
out.auto_timers = timers() - base
auto.stop()
out.auto_timers_after_stop = timers() - base
out.auto_lock_held = require('himalaya.sync.lock').is_locked('auto-sync')

local idle = require('himalaya.sync.idle')
idle.start()
idle = reload('himalaya.sync.idle')
idle.start()
out.idle_timers = timers() - base
idle.stop()
out.idle_timers_after_stop = timers() - base
io.stdout:write(vim.json.encode(out))
]]):format(t.root, rc, slow_mbsync))
    eq({
      setup_kept = 'ask',
      running_seen = 'running',
      statusline = 'sync demo',
      init_statusline = 'sync demo',
      completed = 1,
      listener_called = true,
      final = 'completed',
      id_kept = true,
      auto_enabled = true,
      auto_leader = true,
      auto_timers = 1,
      auto_timers_after_stop = 0,
      auto_lock_held = false,
      idle_timers = 1,
      idle_timers_after_stop = 0,
    }, vim.json.decode(stdout))
  end)

  it('the status line and listeners show a sync as soon as start_sync returns', function()
    local dir = t.tmpdir()
    local slow = t.script(dir, 'slow-mbsync', 'sleep 0.5; exit 0')
    t.use(t.standalone_mbsyncrc(dir, t.closed_port()), { mbsync = { cmd = slow }, notify = false })
    local heard = {}
    t.defer(manager.on_update(function(info)
      heard[#heard + 1] = info.status
    end))
    local id = manager.start_sync('full', { account = 'demo' })
    ok(id, 'started')
    eq('running', manager.get_sync_info().status)
    eq('sync demo', manager.statusline())
    -- The listeners on the next loop turn, as for any change.
    eq({}, heard)
    t.wait_for(function()
      return #heard > 0
    end, 1000, 'an update')
    eq('running', heard[1])
    t.wait_for(function()
      return not manager.is_busy()
    end, 10000, 'the sync to end')
    eq('', manager.statusline())
  end)

  it("shows another process's sync in the status line and get_sync_info() until it ends or dies", function()
    local dir = t.tmpdir()
    t.use(t.standalone_mbsyncrc(dir, t.closed_port()), { notify = false })
    -- The engine watches the lock folder once the library is in use.
    ok(manager.history())
    local told = 0
    t.defer(manager.on_update(function(info)
      told = told + #info.elsewhere
    end))
    local function shown(text, what)
      t.wait_for(function()
        return manager.statusline() == text
      end, 5000, what .. ': ' .. vim.inspect(text) .. ' in the status line, not ' .. vim.inspect(
        manager.statusline()
      ))
    end

    local first = t.tool_holds('sync-demo')
    shown(('sync demo (himalaya-sync %d)'):format(first.pid), 'a sync of another process')
    local e = manager.get_sync_info().elsewhere
    eq(1, #e, vim.inspect(e))
    eq({ 'demo', first.pid, 'himalaya-sync' }, { e[1].account, e[1].pid, e[1].process })
    ok(type(e[1].since) == 'number', vim.inspect(e[1]))
    ok(told > 0, 'listeners told')
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local status = vim.api.nvim_exec2('HimalayaSync status', { output = true }).output
    contains(status, ('demo: synced by himalaya-sync %d since '):format(first.pid))
    -- It ends (the tool releases the lock on SIGTERM), or it dies.
    first:kill(15)
    shown('', 'its end')
    eq({}, manager.get_sync_info().elsewhere)
    local second = t.tool_holds('sync-demo')
    shown(('sync demo (himalaya-sync %d)'):format(second.pid), 'the next one')
    second:kill(9)
    shown('', 'its holder killed')
    -- Other locks are no syncs.
    t.tool_holds('history')
    t.wait_for(function()
      return require('himalaya.sync.lock').is_locked('history')
    end, 5000, 'the other process to hold lock history')
    vim.wait(300)
    eq('', manager.statusline())
  end)

  --- An mbsyncrc in `dir` whose group `both` syncs channels `both-inbox`
  --- (what an inbox sync of `both` syncs) and `two`.
  ---@param dir string
  ---@return string path
  local function group_mbsyncrc(dir)
    local rc = dir .. '/mbsyncrc'
    t.write(
      rc,
      ([[
MaildirStore far
Path %s/far/

MaildirStore near
Path %s/near/

Channel both-inbox
Far :far:INBOX
Near :near:INBOX

Channel two
Far :far:two
Near :near:two

Group both
Channel both-inbox
Channel two
]]):format(dir, dir)
    )
    return rc
  end

  it("another process's sync of a group shows once in the status line, by the name it gave", function()
    local dir = t.tmpdir()
    local rc = group_mbsyncrc(dir)
    local quick = t.script(dir, 'quick-mbsync', 'exit 0')
    t.use(rc, { mbsync = { cmd = quick }, notify = false })
    ok(manager.history())
    -- The command-line tool syncs the group with an mbsync that takes its
    -- time; it holds the locks of both channels meanwhile.
    vim.fn.mkdir(dir .. '/bin', 'p')
    t.script(dir .. '/bin', 'mbsync', 'exec sleep 60')
    local lock = require('himalaya.sync.lock')
    local other = vim.system({ t.root .. '/target/release/himalaya-sync', 'sync', 'both', 'full', '-c', rc }, {
      env = { HIMALAYA_SYNC_LOCK_DIR = lock.lock_dir(), PATH = dir .. '/bin:' .. os.getenv('PATH') },
    })
    t.defer(function()
      other:kill(9)
      other:wait(5000)
    end)
    t.wait_for(function()
      return #manager.get_sync_info().elsewhere == 2
    end, 5000, 'both channels to show')
    local got = manager.get_sync_info().elsewhere
    eq({ 'both-inbox', 'two' }, { got[1].account, got[2].account })
    eq({ 'full sync of both', 'full sync of both' }, { got[1].purpose, got[2].purpose })
    eq(('sync both (himalaya-sync %d)'):format(other.pid), manager.statusline())
    -- An inbox sync of the group here waits for one of those channels: the
    -- group is named once, by this Neovim's sync.
    ok(manager.start_sync('inbox', { account = 'both', wait = 20 }))
    t.wait_for(function()
      return manager.get_sync_info().waiting_for ~= nil
    end, 5000, 'the wait')
    eq({ 'both-inbox' }, manager.get_sync_info().channels)
    eq('sync both waiting', manager.statusline())
    other:kill(15)
    eq(143, other:wait(10000).code)
    t.wait_for(function()
      return not manager.is_busy() and manager.statusline() == ''
    end, 5000, 'the sync to end and the status line to clear')
  end)

  --- A sync of `account` (mbsync: a stand-in that takes 0.3 s) waits for
  --- the command-line tool, which holds the lock of channel `held`, and
  --- runs once it is killed. While it waits, the status line shows only
  --- this Neovim's sync; the first update after the wait shows no other
  --- process, although the engine's next look may be 250 ms away.
  ---@param dir string
  ---@param mbsyncrc string
  ---@param account string
  ---@param held string
  local function wait_for_the_other(dir, mbsyncrc, account, held)
    local slow = t.script(dir, 'slow-mbsync', 'sleep 0.3; exit 0')
    t.use(mbsyncrc, { mbsync = { cmd = slow }, notify = false })
    ok(manager.history())
    local other = t.tool_holds('sync-' .. held)
    t.wait_for(function()
      return #manager.get_sync_info().elsewhere == 1
    end, 5000, 'the other process to show')
    -- Each update while this Neovim's sync runs: whether it waits, and how
    -- many syncs of other processes are shown.
    local seen = {}
    t.defer(manager.on_update(function(info)
      if info.status == 'running' then
        seen[#seen + 1] = { info.waiting_for ~= nil, #info.elsewhere }
      end
    end))
    ok(manager.start_sync('full', { account = account, wait = 20 }))
    t.wait_for(function()
      return manager.get_sync_info().waiting_for ~= nil
    end, 5000, 'the wait')
    eq('sync ' .. account .. ' waiting', manager.statusline())
    other:kill(15)
    t.wait_for(function()
      return not manager.is_busy()
    end, 10000, 'the sync to end')
    eq('', manager.statusline())
    -- The first update after the wait.
    local waited, after = false, nil
    for _, s in ipairs(seen) do
      waited = waited or s[1]
      if waited and not s[1] then
        after = after or s
      end
    end
    eq({ false, 0 }, after, vim.inspect(seen))
  end

  it("a sync of this Neovim that waited for another process's shows that one gone once it runs", function()
    local dir = t.tmpdir()
    wait_for_the_other(dir, t.standalone_mbsyncrc(dir, t.closed_port()), 'demo', 'demo')
  end)

  it("a sync of a group that waited for another process's sync of one of its channels: the same", function()
    local dir = t.tmpdir()
    wait_for_the_other(dir, group_mbsyncrc(dir), 'both', 'both-inbox')
    eq({ 'both-inbox', 'two' }, manager.get_sync_info().channels)
  end)

  it('the status line and get_sync_info() speak of the sync that ended last, not of the last one asked for', function()
    local dir = t.tmpdir()
    local slow = t.script(dir, 'slow-mbsync', 'sleep 0.5; exit 0')
    t.use(t.standalone_mbsyncrc(dir, t.closed_port()), { mbsync = { cmd = slow }, notify = false })
    local full = assert(manager.start_sync('full', { account = 'demo' }))
    -- A check runs beside it, and fails at once: nothing listens there.
    local check = assert(manager.start_sync('check', { account = 'demo' }))
    t.wait_for(function()
      return not manager.is_busy()
    end, 10000, 'both to end')
    local info = manager.get_sync_info()
    local ended = {}
    for _, s in ipairs(info.syncs) do
      ended[s.id] = s
    end
    eq('error', ended[check].status)
    eq('completed', ended[full].status)
    ok(ended[check].end_time < ended[full].end_time, 'the check ended first')
    eq('', manager.statusline())
    -- And what get_sync_info() (and :HimalayaSync status) call the last sync.
    eq({ full, 'completed' }, { info.id, info.status })
  end)

  it('an error in a User autocommand leaves the status line and listeners updated', function()
    local dir = t.tmpdir()
    -- It notes the lock folder it was told of: mbsync's PassCmd (the
    -- token command) must take its OAuth lock in the folder Neovim uses.
    local ok_mbsync = t.script(dir, 'ok-mbsync', ('printf %%s "$HIMALAYA_SYNC_LOCK_DIR" > %s/seen; exit 0'):format(dir))
    t.use(t.standalone_mbsyncrc(dir, t.closed_port()), { mbsync = { cmd = ok_mbsync }, notify = false })
    local au = vim.api.nvim_create_autocmd('User', {
      pattern = 'HimalayaSyncCompleted',
      callback = function(ev)
        -- The vimdoc's first example did this: a check has no `pulled`.
        return ev.data.result.pulled.nope
      end,
    })
    t.defer(function()
      vim.api.nvim_del_autocmd(au)
    end)
    local last
    t.defer(manager.on_update(function(info)
      last = info
    end))
    vim.v.errmsg = ''
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    ok(result.success)
    vim.wait(100)
    local seen = vim.tbl_filter(function(s)
      return s.id == info.id
    end, last.syncs)
    eq('completed', seen[1].status, 'the listener heard the end')
    eq(nil, manager.statusline():find('sync demo', 1, true), manager.statusline())
    -- Neovim itself reports the autocommand's error.
    contains(vim.v.errmsg, "attempt to index field 'pulled'")
  end)

  it('cancel before any sync neither fixes the lock folder nor raises on a bad id; the folder then stays', function()
    -- In a Neovim of its own: the library loaded, no sync yet, a lock folder
    -- of one's own configured.
    local dir = t.tmpdir()
    -- It notes the lock folder it was told of: mbsync's PassCmd (the
    -- token command) must take its OAuth lock in the folder Neovim uses.
    local ok_mbsync = t.script(dir, 'ok-mbsync', ('printf %%s "$HIMALAYA_SYNC_LOCK_DIR" > %s/seen; exit 0'):format(dir))
    local stdout = t.nvim_lua(
      ([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = { mbsync = { config = %q, cmd = %q }, notify = false, lock_dir = %q }
local manager = require('himalaya.sync.manager')
assert(require('himalaya.sync.native').get())
local out = { none = manager.cancel_sync() }
out.bad = { manager.cancel_sync({}) }
out.half = { manager.cancel_sync(1.5) }
local done
assert(manager.start_sync('full', { on_complete = function(r, info) done = info end }))
vim.wait(10000, function() return done ~= nil end)
out.status = done.status
out.lock_file = vim.fn.filereadable(%q .. '/sync-demo.lock')
out.seen = vim.fn.readfile(%q)[1]
-- Another lock folder once one is in use: told once, the sync goes on in
-- the folder in use.
out.notes = {}
vim.notify = function(msg, level) table.insert(out.notes, { msg, level }) end
require('himalaya.sync').setup({ lock_dir = %q })
require('himalaya.sync').setup({ lock_dir = %q, max_parallel = 2 })
done = nil
assert(manager.start_sync('full', { on_complete = function(r, info) done = info end }))
vim.wait(10000, function() return done ~= nil end)
out.again = done.status
io.stdout:write(vim.json.encode(out))
]]):format(
        t.root,
        t.standalone_mbsyncrc(dir, t.closed_port()),
        ok_mbsync,
        dir .. '/locks',
        dir .. '/locks',
        dir .. '/seen',
        dir .. '/other',
        dir .. '/other'
      )
    )
    eq({
      none = 0,
      bad = { 0, 'invalid sync id {}: expected a whole number' },
      half = { 0, 'invalid sync id 1.5: expected a whole number' },
      status = 'completed',
      lock_file = 1,
      seen = dir .. '/locks',
      notes = {
        {
          ('himalaya-sync: the lock folder is already %s/locks; restart Neovim to use %s/other '):format(dir, dir)
            .. '(lock_dir changed after the first lock or sync)',
          vim.log.levels.WARN,
        },
      },
      again = 'completed',
    }, vim.json.decode(stdout))
    eq(0, vim.fn.isdirectory(dir .. '/other'), 'the other folder is not made')
  end)

  it('mbsync sees the environment as Neovim has it when the sync starts', function()
    -- Set after the library loaded: engine threads read a copy of the
    -- environment taken on Neovim's thread at each call, never the live
    -- one, so the copy must be fresh. mbsync is named without a path and
    -- found in PATH as Neovim has it, too.
    require('himalaya.sync.lock').list_locks()
    eq(true, require('himalaya.sync.native').is_loaded())
    local dir = t.tmpdir()
    local bin = dir .. '/bin'
    vim.fn.mkdir(bin, 'p')
    local seen = dir .. '/seen'
    t.write(bin .. '/mbsync-env-probe', ('#!/bin/sh\nprintf %%s "$HIMALAYA_SYNC_SPEC_VAR" > %s\n'):format(seen))
    vim.fn.setfperm(bin .. '/mbsync-env-probe', 'rwx------')
    local path = vim.env.PATH
    t.defer(function()
      vim.env.PATH = path
      vim.env.HIMALAYA_SYNC_SPEC_VAR = nil
    end)
    vim.env.PATH = bin .. ':' .. path
    vim.env.HIMALAYA_SYNC_SPEC_VAR = 'set after the load'
    t.use(t.standalone_mbsyncrc(dir, t.closed_port()), { mbsync = { cmd = 'mbsync-env-probe' } })
    local done
    local id, err = manager.start_sync('full', {
      on_complete = function(result)
        done = result
      end,
    })
    ok(id, err)
    vim.wait(10000, function()
      return done ~= nil
    end)
    ok(done and done.success, vim.inspect(done))
    eq('set after the load', t.read(seen))
  end)
end)
