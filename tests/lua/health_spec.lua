-- :checkhealth, :HimalayaSync build, and a lock folder that is not private.
local t = require('helpers')
local describe, it, eq, ok, contains = t.describe, t.it, t.eq, t.ok, t.contains

local uv = vim.uv or vim.loop

local function health_output()
  vim.cmd('checkhealth himalaya.sync')
  local out = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
  vim.cmd('bwipeout!')
  return out
end

describe('health and hostile lock folders', function()
  it('checkhealth reports library, mbsync and a private lock folder', function()
    local rc = t.standalone_mbsyncrc(t.tmpdir(), t.closed_port())
    t.use(rc)
    require('himalaya.sync.lock').list_locks()
    local out = health_output()
    contains(out, 'configuration is valid')
    contains(out, 'library ' .. require('himalaya.sync.version'))
    contains(out, 'isync 1.')
    contains(out, ('OK accounts (channels and groups of %s): demo'):format(rc))
    contains(out, 'is owned by you and private (0700)')
    contains(out, 'auto-sync is off (:HimalayaSync auto on)')
    contains(out, 'IDLE is off (:HimalayaSync idle on)')
    contains(
      out,
      t.root .. '/target/release/himalaya-sync, version ' .. require('himalaya.sync.version') .. ': the relay'
    )
    ok(not out:find('ERROR'), out)
    ok(not out:find('neither Pass nor PassCmd'), out)

    -- An account mbsync would have to ask for its password.
    local rc = t.tmpdir() .. '/mbsyncrc'
    t.write(rc, (t.read(t.standalone_mbsyncrc(t.tmpdir(), t.closed_port())):gsub('\nPass[^\n]*', '')))
    t.use(rc)
    out = health_output()
    contains(
      out,
      'WARNING IMAPAccount demo has neither Pass nor PassCmd: mbsync would ask for its password, which nobody can type in here'
    )
    contains(out, 'give it a PassCmd that prints the password')
  end)

  it('checkhealth says that isync 1.3 cannot log in with an OAuth2 token', function()
    local dir = t.tmpdir()
    local fake = dir .. '/mbsync'
    t.write(fake, '#!/bin/sh\necho isync 1.3.0\n')
    vim.fn.setfperm(fake, 'rwx------')
    t.use(t.standalone_mbsyncrc(dir, t.closed_port()), {
      mbsync = { cmd = fake },
      accounts = { demo = { oauth = { refresh_cmd = 'true', store = { backend = 'plain', dir = dir .. '/tokens' } } } },
    })
    local out = health_output()
    contains(
      out,
      'ERROR isync 1.3.0 cuts an OAuth2 token: it passes at most 79 characters of the PassCmd output, so demo cannot log in'
    )
    contains(out, 'install isync 1.4 or later')
    -- Without OAuth2 accounts, 1.3 is fine.
    t.use(t.standalone_mbsyncrc(dir, t.closed_port()), { mbsync = { cmd = fake } })
    out = health_output()
    contains(out, 'found: isync 1.3.0')
    ok(not out:find('cuts an OAuth2 token'), out)
  end)

  it('a refresh_cmd account without a valid token is told as refreshed at next use, not as an error', function()
    local dir = t.tmpdir()
    local store = { backend = 'encrypted', dir = dir .. '/tokens', key_cmd = 'printf correct-horse-battery-staple' }
    t.use(t.standalone_mbsyncrc(dir, t.closed_port()), {
      accounts = { demo = { oauth = { refresh_cmd = 'exit 1', store = store } } },
    })
    local out = health_output()
    contains(out, 'demo: no token stored; refreshed by refresh_cmd at next use')
    -- An expired token with no refresh token: the script needs none.
    ok(require('himalaya.sync.oauth').store_token('demo', {
      access_token = t.secret('expired-by-script-3e1f'),
      expires_at = os.time() - 600,
    }))
    out = health_output()
    contains(out, 'demo: token expired 10 min ago; refreshed by refresh_cmd at next use')
    ok(not out:find('authorize demo', 1, true), out)
    ok(not out:find('ERROR demo', 1, true), out)
  end)

  it('checkhealth says when there is no mbsyncrc, and where it looked', function()
    local dir = t.tmpdir()
    t.use(dir .. '/nowhere/mbsyncrc')
    require('himalaya.sync.lock').list_locks()
    local out = health_output()
    contains(out, 'ERROR ')
    contains(out, dir .. '/nowhere/mbsyncrc')
    contains(out, 'mbsync.config names the mbsyncrc')
    -- And IDLE says why it cannot watch.
    local idle = require('himalaya.sync.idle')
    t.defer(idle.stop)
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local seen = t.notifications()
    vim.cmd('HimalayaSync idle on')
    contains(seen[#seen][1], 'IDLE is on but not watching: no account could be watched: ')
    contains(idle.describe(), 'no account could be watched: ')
    contains(idle.describe(), dir .. '/nowhere/mbsyncrc')
  end)

  it('an invalid configuration is reported once, not again under every section', function()
    vim.g.himalaya_sync = { max_parallel = 0 }
    t.defer(function()
      vim.g.himalaya_sync = nil
    end)
    local out = health_output()
    eq(1, select(2, out:gsub('himalaya_sync.max_parallel', '')), out)
    contains(out, 'ERROR invalid config g:himalaya_sync.max_parallel')
    contains(out, 'the mbsyncrc was not read: the configuration is invalid (see above)')
    contains(out, 'the himalaya configuration was not read: the configuration is invalid (see above)')
    contains(out, 'skipped: the configuration is invalid (see above)')
  end)

  it('checkhealth says when a throttled account has no relay program', function()
    vim.g.himalaya_sync = { accounts = { slow = { throttle = { kbps = 10 } } } }
    local native = require('himalaya.sync.native')
    local real = native.tool_path
    native.tool_path = function() end
    t.defer(function()
      native.tool_path = real
      vim.g.himalaya_sync = nil
    end)
    local out = health_output()
    contains(out, 'ERROR himalaya-sync not found (not at ')
    contains(out, 'throttled accounts (slow) cannot sync')
  end)

  it('checkhealth warns about a himalaya-sync of another version', function()
    local fake = t.script(t.tmpdir(), 'himalaya-sync', "echo 'himalaya-sync 9.9.9 (build x)'")
    local native = require('himalaya.sync.native')
    local real = native.tool_path
    native.tool_path = function()
      return fake
    end
    t.defer(function()
      native.tool_path = real
    end)
    local out = health_output()
    contains(out, 'WARNING ' .. fake .. ' is version 9.9.9, not ' .. require('himalaya.sync.version'))
  end)

  it('a lock folder with mode 0777 is refused with a clear error, and health says so', function()
    local dir = t.tmpdir() .. '/locks'
    vim.fn.mkdir(dir, 'p')
    uv.fs_chmod(dir, tonumber('777', 8))
    -- The lock folder is opened once per process: this Neovim has not
    -- opened one yet when this test runs first... so use a fresh Neovim.
    local stdout = t.nvim_lua(([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = { lock_dir = %q, accounts = { demo = { oauth = {
  provider = 'generic', client_id = 'c', auth_url = 'http://127.0.0.1:9/a', token_url = 'http://127.0.0.1:9/t',
} } } }
local lock = require('himalaya.sync.lock')
local got, err, kind = lock.acquire_lock('x', 0)
-- The callback form hands the same failure to its callback.
local cb
local accepted = lock.acquire_lock('y', 0, function(g, e, k)
  cb = { got = g, err = e, kind = k }
end)
vim.wait(5000, function()
  return cb ~= nil
end)
io.stdout:write(vim.json.encode({
  got = got, err = err, kind = kind, n = #lock.list_locks(), accepted = accepted, cb = cb or vim.NIL,
}))
vim.cmd('checkhealth himalaya.sync')
io.stdout:write('\n' .. table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n'))
]]):format(t.root, dir))
    local first, rest = stdout:match('^([^\n]*)\n(.*)$')
    local res = vim.json.decode(first)
    eq(false, res.got)
    eq('config', res.kind)
    contains(res.err, dir)
    contains(res.err, '0777')
    contains(res.err, 'chmod 700')
    ok(not res.err:find('\n'), 'one line')
    eq(false, res.accepted)
    eq({ got = false, err = res.err, kind = 'config' }, res.cb)
    -- Told once, under locks; the sections that need the folder say so.
    eq(1, select(2, rest:gsub('0777', '')), rest)
    contains(rest, 'the mbsyncrc was not read: the lock folder cannot be used (see locks below)')
    contains(rest, 'the tokens were not looked at: the lock folder cannot be used (see locks below)')
    eq(tonumber('40777', 8), uv.fs_stat(dir).mode, 'nothing was changed')
  end)

  it('a lock file replaced by a symlink is refused and its target untouched', function()
    local lock = require('himalaya.sync.lock')
    local dir = assert(lock.lock_dir())
    local target = t.tmpdir() .. '/precious'
    t.write(target, 'keep me')
    assert(uv.fs_symlink(target, dir .. '/evil.lock'))
    t.defer(function()
      uv.fs_unlink(dir .. '/evil.lock')
    end)
    local got, err = lock.acquire_lock('evil', 0)
    eq(false, got)
    contains(err, 'symlink')
    eq('keep me', t.read(target))
    lock.cleanup_stale_locks()
    eq('keep me', t.read(target))
  end)

  it(':HimalayaSync build rebuilds in the background and keeps the loaded build', function()
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local native = require('himalaya.sync.native')
    assert(native.get())
    local msgs = t.notifications()
    local ticks = 0
    local timer = uv.new_timer()
    timer:start(0, 10, function()
      ticks = ticks + 1
    end)
    vim.cmd('HimalayaSync build')
    t.wait_for(function()
      return #msgs >= 2
    end, 300000, 'the build to finish')
    timer:stop()
    timer:close()
    contains(msgs[1][1], 'building')
    contains(msgs[2][1], 'build finished')
    -- Whether cargo had anything to do depends on what ran before.
    ok(msgs[2][1]:find('already using build') or msgs[2][1]:find('now using build'), msgs[2][1])
    ok(ticks > 0, 'the editor kept running during the build')
  end)

  it('a new build is loaded in place while nothing runs, and works', function()
    local native = require('himalaya.sync.native')
    local old = assert(native.get())
    -- A "new build": the same library under another path and mtime.
    local copy = t.tmpdir() .. '/libhimalaya_sync.so'
    assert(uv.fs_copyfile(native.build_path(), copy))
    uv.fs_utime(copy, os.time() + 5, os.time() + 5)
    vim.env.HIMALAYA_SYNC_LIB = copy
    t.defer(function()
      vim.env.HIMALAYA_SYNC_LIB = nil
    end)
    -- An id of the running build that the editor has seen.
    local seen
    local old_id = old.emit_test_events(1, 'before-reload')
    native.on_id(old_id, function()
      seen = true
    end)
    t.wait_for(function()
      return seen
    end, 10000, 'an event of the running build')
    native.off(old_id)
    local lock = require('himalaya.sync.lock')
    eq(true, lock.acquire_lock('busy-now', 0))
    local done, msg = native.reload()
    eq(false, done)
    contains(msg, 'restart')
    lock.release_lock('busy-now')
    -- A lock wait still waiting for its answer keeps the running build too.
    local holder = t.hold_plugin_lock('waited-for', 30)
    local answer
    eq(
      true,
      lock.acquire_lock('waited-for', 30, function(got)
        answer = got
      end)
    )
    done, msg = native.reload()
    eq(false, done)
    contains(msg, 'requests are active')
    holder.stop()
    t.wait_for(function()
      return answer ~= nil
    end, 5000, 'the lock wait to be answered')
    eq(true, answer)
    lock.release_lock('waited-for')

    done, msg = native.reload()
    eq(true, done, msg)
    contains(msg, 'now using build')
    eq(copy, native.source())
    local fresh = assert(native.get())
    ok(fresh ~= old)
    eq(true, old.is_stopped())
    eq(false, fresh.is_stopped())
    eq(true, lock.acquire_lock('after-reload', 0))
    eq(true, lock.release_lock('after-reload'))
    local n = 0
    local id = fresh.emit_test_events(100, 'after-reload')
    ok(id > old_id, ('ids go on after a reload: %d after %d'):format(id, old_id))
    native.on_id(id, function()
      n = n + 1
    end)
    t.wait_for(function()
      return n == 100
    end, 10000, 'events from the new build')
    native.off(id)
    done, msg = native.reload()
    eq(true, done, msg)
    contains(msg, 'already using')
  end)
end)
