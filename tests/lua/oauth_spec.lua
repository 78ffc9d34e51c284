-- OAuth2 end to end on 127.0.0.1: a real OAuth2 server (oauth2-mock-server,
-- tests/fixture/oauth_server.mjs), dovecot checking XOAUTH2 tokens by
-- introspection, mbsync with AuthMechs XOAUTH2 and PassCmd running our
-- token command, and the plugin in between.
local t = require('helpers')
local describe, it, eq, ok, contains = t.describe, t.it, t.eq, t.ok, t.contains

local oauth = require('himalaya.sync.oauth')
local uv = vim.uv or vim.loop

local BIN = t.root .. '/target/release/himalaya-sync'

local post, get, oauth_server = t.http_post, t.http_get, t.oauth_server

--- The fixture of these tests: a dovecot taking XOAUTH2 tokens from `server`.
local function setup(server)
  return t.oauth_account(server, 'INBOX=10,Work=5')
end

local authorize = t.oauth_authorize

--- The current access token, registered as a secret nothing may print.
local function current_token()
  local token, err = oauth.get_valid_token('demo')
  ok(token, err)
  if t.secret then
    t.secret(token)
  end
  return token
end

describe('oauth', function()
  it('syncs over XOAUTH2 with PassCmd, refreshes an expired token, and reports a revoked grant', function()
    local server = oauth_server()
    local fx = setup(server)
    authorize(server)
    current_token()

    local result = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))

    -- Tokens issued from now on live 2 s; the next sync finds it expired
    -- and refreshes it first, with no user action.
    ok(post(server.control_url .. '/config', { expires_in = 2 }))
    eq(true, (oauth.refresh_token('demo')))
    local before = get(server.control_url).counters.refreshes
    uv.sleep(2500)
    fx.deliver('demo', 'INBOX', 3)
    result = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    ok(get(server.control_url).counters.refreshes > before, 'the sync refreshed the token')

    -- A revoked grant: a clear message, no hang, no retry loop.
    ok(post(server.control_url .. '/revoke_refresh_tokens'))
    post(server.control_url .. '/revoke_access_tokens')
    uv.sleep(2500)
    local started = uv.hrtime()
    result = t.sync_and_wait('full', { account = 'demo' }, 30000)
    eq(false, result.success)
    eq('auth', result.kind)
    contains(result.error, 're-authorization needed')
    ok((uv.hrtime() - started) / 1e9 < 15, 'failed quickly')
    local st = oauth.status('demo')
    eq('auth', st.last_error.kind)
  end)

  it('with isync 1.3, whose PassCmd cuts the token, a sync says to install 1.4 (which syncs)', function()
    local server = oauth_server()
    local fx = setup(server)
    authorize(server)
    current_token()
    local refreshes = get(server.control_url).counters.refreshes
    local result = t.sync_and_wait('full', { account = 'demo' }, 60000)
    if t.mbsync_version() >= 104 then
      eq(true, result.success, result.error)
      eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
      return
    end
    eq(false, result.success)
    eq('config', result.kind)
    contains(result.error, 'the OAuth2 login cannot work with this mbsync')
    contains(result.error, 'install isync 1.4 or later')
    eq(1, result.attempts)
    eq(refreshes, get(server.control_url).counters.refreshes, 'no refresh: a new token would be cut too')
  end)

  it('an auth failure mid-session refreshes the token and retries once, unless the provider is out of reach', function()
    local server = oauth_server()
    local fx, store = setup(server)
    authorize(server)
    local old = current_token()
    -- The server forgets the access token (as when it is revoked early):
    -- mbsync's login fails, the manager refreshes and retries.
    ok(post(server.control_url .. '/revoke_access_tokens'))
    local result = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    eq(2, result.attempts)
    ok(current_token() ~= old, 'a new access token')
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))

    -- Again, but the token endpoint cannot be reached: that says nothing
    -- about the credentials, and the sync ends as a network failure (no
    -- retries are configured here), not as one needing re-authorization.
    ok(post(server.control_url .. '/revoke_access_tokens'))
    t.setup_for_test({
      mbsync = { config = fx.dir .. '/mbsyncrc-oauth' },
      notify = false,
      retry = { max_attempts = 0 },
      accounts = {
        demo = {
          oauth = {
            provider = 'generic',
            client_id = server.client_id,
            token_url = ('http://127.0.0.1:%d/token'):format(t.closed_port()),
            store = { backend = 'encrypted', dir = store, key_cmd = 'printf correct-horse-battery-staple' },
          },
        },
      },
    })
    result = t.sync_and_wait('full', { account = 'demo' }, 60000)
    eq(false, result.success)
    eq('network', result.kind, result.error)
    eq(2, result.attempts)
    contains(result.error, 'could not be refreshed')
    ok(not result.error:find('re-authorization', 1, true), result.error)
    eq('network', oauth.status('demo').last_error.kind)
  end)

  it('one refresh for many processes at once, and the token command prints only the token', function()
    local server = oauth_server()
    setup(server)
    -- A token that has expired when the four start.
    ok(post(server.control_url .. '/config', { expires_in = 4 }))
    authorize(server)
    uv.sleep(4500)
    -- The refreshed one lives an hour, well beyond the refresh margin
    -- (300 s): a process that starts only after the first one stored it
    -- takes it as it is, instead of refreshing a token about to expire.
    ok(post(server.control_url .. '/config', { expires_in = 3600 }))
    local before = get(server.control_url).counters.refreshes
    local procs = {}
    for i = 1, 4 do
      procs[i] = vim.system({ BIN, 'token', 'demo' }, { text = true })
    end
    local outs = {}
    for i, p in ipairs(procs) do
      local r = p:wait(60000)
      eq(0, r.code, r.stderr)
      eq('', r.stderr)
      outs[i] = r.stdout
    end
    if t.secret then
      t.secret(vim.trim(outs[1]))
    end
    for i = 2, 4 do
      ok(outs[1] == outs[i], 'every process got the same fresh token')
    end
    ok(outs[1]:match('^[%w%-%._~+/]+=*\n$'), 'one line, the token')
    eq(before + 1, get(server.control_url).counters.refreshes, 'exactly one refresh')

    -- An unknown account: one line on stderr, non-zero exit, no token.
    local r = vim.system({ BIN, 'token', 'nobody' }, { text = true }):wait(10000)
    eq(1, r.code)
    contains(r.stderr, 'no OAuth account "nobody"')
    eq('', r.stdout)
  end)

  it('the callback form never blocks; status never shows a token', function()
    local server = oauth_server()
    setup(server)
    authorize(server)
    local token = current_token()
    ok(post(server.control_url .. '/config', { expires_in = 3600 }))
    local got
    local t0 = uv.hrtime()
    eq(
      true,
      oauth.refresh_token('demo', function(success, err)
        got = { success, err }
      end)
    )
    -- Returned before the answer: the callback runs from the loop later.
    -- (The bound only tells "did not wait for the server" on a busy
    -- machine.)
    eq(nil, got, 'no answer yet when the call returned')
    ok((uv.hrtime() - t0) / 1e6 < 500, 'returned at once')
    t.wait_for(function()
      return got ~= nil
    end, 30000, 'the refresh')
    eq(true, got[1], got[2])
    local st = oauth.status('demo')
    eq(true, st.has_token)
    eq(true, st.has_refresh_token)
    eq('encrypted', st.store)
    ok(st.expires_in > 3000, 'expires in about an hour')
    ok(not vim.inspect(st):find(token, 1, true))
    ok(not vim.inspect(st):find(current_token(), 1, true))
    local notes = {}
    local orig = vim.notify
    vim.notify = function(msg)
      notes[#notes + 1] = msg
    end
    t.defer(function()
      vim.notify = orig
    end)
    vim.cmd('runtime plugin/himalaya-sync.vim')
    eq(
      { 'authorize', 'cancel', 'clear', 'refresh', 'status' },
      vim.fn.sort(vim.fn.getcompletion('HimalayaSync oauth ', 'cmdline'))
    )
    eq({ 'demo' }, vim.fn.getcompletion('HimalayaSync oauth status ', 'cmdline'))
    eq({ 'demo' }, vim.fn.getcompletion('HimalayaSync oauth authorize d', 'cmdline'))
    eq({ '--device' }, vim.fn.getcompletion('HimalayaSync oauth authorize demo ', 'cmdline'))
    eq({}, vim.fn.getcompletion('HimalayaSync oauth status demo ', 'cmdline'))
    vim.cmd('HimalayaSync oauth status demo')
    t.wait_for(function()
      return #notes > 0
    end, 10000, 'the status notification')
    contains(notes[1], 'store: encrypted')
    ok(not notes[1]:find(current_token(), 1, true))
    -- The only OAuth account goes without saying.
    vim.cmd('HimalayaSync oauth status')
    t.wait_for(function()
      return #notes > 1
    end, 10000, 'the status notification without an account')
    -- (Its times may have moved on a second since the first.)
    eq(notes[1]:match('^[^\n]*'), notes[2]:match('^[^\n]*'))
    contains(notes[2], 'refresh token stored')

    vim.cmd('checkhealth himalaya.sync')
    local report = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
    vim.cmd('bwipeout!')
    contains(report, 'demo: token stored in encrypted, expires in ')
    ok(not report:find(current_token(), 1, true), 'health shows no token')
    -- An expired token is told as such, not as "expires in -10 min".
    ok(oauth.store_token('demo', {
      access_token = t.secret('expired-access-51ad0e'),
      refresh_token = t.secret('kept-refresh-93c2aa'),
      expires_at = os.time() - 600,
    }))
    vim.cmd('checkhealth himalaya.sync')
    report = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
    vim.cmd('bwipeout!')
    contains(report, 'demo: token stored in encrypted, expired 10 min ago')

    eq(true, (oauth.clear_token('demo')))
    eq(false, oauth.status('demo').has_token)
    local none, err, kind = oauth.get_valid_token('demo')
    eq(nil, none)
    eq('auth', kind)
    contains(err, 're-authorization needed')
    -- A command's failure names the account once.
    local before = #notes
    vim.cmd('HimalayaSync oauth refresh demo')
    t.wait_for(function()
      return #notes > before
    end, 10000, 'the refresh failure')
    contains(notes[#notes], 'demo')
    ok(not notes[#notes]:find('demo: demo:', 1, true), notes[#notes])
  end)

  it("token requests go through the proxy Neovim's environment names when they start", function()
    local server = oauth_server()
    setup(server)
    authorize(server)
    -- A proxy on a real socket that refuses everything with 502 and keeps
    -- the request lines it was sent.
    local seen = {}
    local proxy = assert(uv.new_tcp())
    assert(proxy:bind('127.0.0.1', 0))
    proxy:listen(8, function()
      local conn = assert(uv.new_tcp())
      proxy:accept(conn)
      local head = ''
      conn:read_start(function(_, data)
        head = head .. (data or '')
        if not data or head:find('\r\n\r\n') then
          seen[#seen + 1] = head:match('^[^\r]*')
          conn:read_stop()
          conn:write('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n', function()
            conn:close()
          end)
        end
      end)
    end)
    -- The machine's own proxy settings are set aside for this test.
    local saved = {}
    for _, scheme in ipairs({ 'HTTP', 'HTTPS', 'ALL', 'NO' }) do
      for _, name in ipairs({ scheme .. '_PROXY', scheme:lower() .. '_proxy' }) do
        saved[name] = vim.env[name] or false
        vim.env[name] = nil
      end
    end
    saved.REQUEST_METHOD = vim.env.REQUEST_METHOD or false
    vim.env.REQUEST_METHOD = nil
    t.defer(function()
      for name, value in pairs(saved) do
        vim.env[name] = value or nil
      end
      proxy:close()
    end)
    local function refresh()
      local got
      oauth.refresh_token('demo', function(success, err, kind)
        got = { success, err, kind }
      end)
      t.wait_for(function()
        return got ~= nil
      end, 30000, 'the refresh')
      return got[1], got[2], got[3]
    end

    -- Set after the library was loaded: the engine still sees it. The
    -- proxy's 502 is a network error: the forced refresh fails, and the
    -- valid token stays.
    local before = current_token()
    vim.env.HTTP_PROXY = 'http://127.0.0.1:' .. proxy:getsockname().port
    local refreshed, why, kind = refresh()
    eq({ nil, 'network' }, { refreshed, kind }, why)
    ok(#seen > 0, 'the proxy was asked')
    for _, line in ipairs(seen) do
      eq('POST ' .. server.token_url .. ' HTTP/1.1', line)
    end
    eq(before, current_token())

    local asked = #seen
    vim.env.NO_PROXY = '127.0.0.1'
    local success, err = refresh()
    eq(true, success, err)
    eq(asked, #seen, 'NO_PROXY: straight to the server')
    ok(current_token() ~= before, 'a new token')

    vim.env.NO_PROXY = nil
    -- A value that is not a proxy address is passed over; the log names
    -- the variable, never its value (which may hold a password).
    t.secret('pr0xy-pass')
    vim.env.HTTP_PROXY = 'http://user:pr0xy-pass@[bad'
    success, err = refresh()
    eq(true, success, err)
    eq(asked, #seen)
    ok(t.logged('HTTP_PROXY in the environment is not a proxy address') > 0)
  end)

  it('the token refresh before mbsync can be cancelled; a network failure there is retried', function()
    local manager = require('himalaya.sync.manager')
    local dir = t.tmpdir()
    local rc = t.standalone_mbsyncrc(dir, t.closed_port())
    local store = { backend = 'encrypted', dir = dir .. '/tokens', key_cmd = 'printf correct-horse-battery-staple' }
    -- No token yet: the sync runs the refresh script first, which is slow.
    t.setup_for_test({
      mbsync = { config = rc },
      notify = false,
      accounts = { demo = { oauth = { refresh_cmd = 'sleep 31.25', store = store } } },
    })
    local done
    local id = assert(manager.start_sync('full', {
      account = 'demo',
      on_complete = function(result, info)
        done = { result = result, info = info }
      end,
    }))
    t.wait_for(function()
      return #t.pgrep('sleep 31.25') > 0
    end, 5000, 'the refresh script to run')
    eq(nil, done, 'still refreshing')
    local start = uv.hrtime()
    eq(1, manager.cancel_sync(id))
    -- Asked once is enough: again, it is not counted twice.
    eq({ 0, ('sync #%d is being cancelled already'):format(id) }, { manager.cancel_sync(id) })
    eq({ 0, '1 sync is being cancelled already' }, { manager.cancel_sync() })
    -- "At once" next to the script's 31 s, with room for a busy machine.
    t.wait_for(function()
      return done ~= nil
    end, 5000, 'the cancelled sync to end')
    eq({ 0, ('sync #%d has ended already (cancelled)'):format(id) }, { manager.cancel_sync(id) })
    ok((uv.hrtime() - start) / 1e6 < 5000, 'ended at once')
    eq('cancelled', done.info.status)
    eq('cancelled', done.result.kind)
    -- The script is stopped too, not left to run to its own time limit.
    t.wait_for(function()
      return #t.pgrep('sleep 31.25') == 0
    end, 2000, 'the refresh script to be killed')

    -- CTRL-C during a blocking call stops the wait and says so; the refresh
    -- itself runs to its end in the background.
    t.setup_for_test({
      mbsync = { config = rc },
      notify = false,
      accounts = { demo = { oauth = { refresh_cmd = 'sleep 7.75', store = store } } },
    })
    local ctrl_c = assert(uv.new_timer())
    ctrl_c:start(300, 0, function()
      vim.api.nvim_input('<C-c>')
    end)
    start = uv.hrtime()
    local token, why, kind = oauth.get_valid_token('demo')
    ctrl_c:close()
    ok((uv.hrtime() - start) / 1e6 < 5000, 'stopped waiting at once')
    eq(nil, token)
    eq('cancelled', kind, why)
    eq('stopped waiting for demo (interrupted); it goes on in the background', why)
    ok(#t.pgrep('sleep 7.75') > 0, 'the refresh goes on')
    t.wait_for(function()
      return #t.pgrep('sleep 7.75') == 0
    end, 15000, 'the refresh to end')

    -- A provider that cannot be reached (a resumed laptop whose network is
    -- not up yet): retried like a network failure of mbsync.
    local port = t.closed_port()
    t.setup_for_test({
      mbsync = { config = rc },
      notify = false,
      retry = { max_attempts = 1, base = 0.1, cap = 0.1, jitter = 0 },
      accounts = {
        demo = {
          oauth = {
            provider = 'generic',
            client_id = 'client',
            auth_url = ('http://127.0.0.1:%d/authorize'):format(port),
            token_url = ('http://127.0.0.1:%d/token'):format(port),
            store = store,
          },
        },
      },
    })
    -- A token the engine refuses is a bad argument: kind invalid.
    for field, token in pairs({
      expires_in = { access_token = 'a', expires_in = -1 },
      access_token = { refresh_token = 'r' },
    }) do
      local got, err, kind = oauth.store_token('demo', token)
      eq({ nil, 'invalid' }, { got, kind }, field .. ': ' .. tostring(err))
      contains(err, 'token.' .. field)
    end
    -- Registered: the secret check greps every output and log for them.
    ok(oauth.store_token('demo', {
      access_token = t.secret('stale-access-7f3c91'),
      refresh_token = t.secret('some-refresh-b2e84d'),
      expires_in = 1,
    }))
    vim.wait(1100)
    local result, info = t.sync_and_wait('full', { account = 'demo' }, 20000)
    eq(false, result.success)
    eq('network', result.kind, info.message)
    eq(2, result.attempts, 'retried once')
  end)

  --- Account `demo` with the browser flow on a fixed redirect port, at an
  --- authorization server nobody answers on; returns that port.
  ---@return integer
  --- No browser here: the URLs the plugin would open are only collected
  --- (until the test ends).
  ---@return string[] urls
  local function collect_urls()
    local urls = {}
    local open = vim.ui.open
    vim.ui.open = function(url)
      urls[#urls + 1] = url
      return nil, 'no browser in tests'
    end
    t.defer(function()
      vim.ui.open = open
    end)
    return urls
  end

  local function browser_flow_account()
    local dir = t.tmpdir()
    local closed, redirect = t.closed_port(), t.closed_port()
    t.setup_for_test({
      mbsync = { config = t.standalone_mbsyncrc(dir, t.closed_port()) },
      notify = false,
      accounts = {
        demo = {
          oauth = {
            provider = 'generic',
            client_id = 'client',
            auth_url = ('http://127.0.0.1:%d/authorize'):format(closed),
            token_url = ('http://127.0.0.1:%d/token'):format(closed),
            redirect_port = redirect,
            store = { backend = 'plain', dir = dir .. '/tokens' },
          },
        },
      },
    })
    return redirect
  end

  it('a new authorization replaces the one still waiting, and takes over its fixed port', function()
    local redirect = browser_flow_account()
    local urls = collect_urls()
    local notify = vim.notify
    vim.notify = function() end
    t.defer(function()
      vim.notify = notify
    end)
    local first, second
    ok(oauth.authorize('demo', nil, function(...)
      first = { ... }
    end))
    t.wait_for(function()
      return #urls == 1
    end, 5000, 'the first URL')
    -- The user closed that tab and asks again: the port is taken by the
    -- first listener, which the second request ends.
    ok(oauth.authorize('demo', { timeout = 1 }, function(...)
      second = { ... }
    end))
    t.wait_for(function()
      return first ~= nil and #urls == 2
    end, 5000, 'the first to end and the second URL')
    eq('cancelled', first[3], first[2])
    eq('the authorization of demo was replaced by a newer one', first[2])
    contains(urls[2], 'redirect_uri=http%3A%2F%2F127.0.0.1%3A' .. redirect)
    t.wait_for(function()
      return second ~= nil
    end, 5000, 'the second to time out')
    eq(nil, second[1])
    eq('timeout', second[3], second[2])
  end)

  it('an authorization still waiting can be cancelled, which frees its fixed port', function()
    local redirect = browser_flow_account()
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local urls = collect_urls()
    local seen = t.notifications()
    local first
    ok(oauth.authorize('demo', nil, function(...)
      first = { ... }
    end))
    t.wait_for(function()
      return #urls == 1
    end, 5000, 'the URL')
    vim.cmd('HimalayaSync oauth cancel demo')
    t.wait_for(function()
      return first ~= nil
    end, 5000, 'the authorization to end')
    eq({ nil, 'the authorization of demo was cancelled', 'cancelled' }, { first[1], first[2], first[3] })
    eq({ 'himalaya-sync: cancelled 1 authorization', vim.log.levels.INFO }, seen[#seen])
    vim.cmd('HimalayaSync oauth cancel')
    eq('himalaya-sync: no authorization is waiting', seen[#seen][1])
    -- The port is free at once: the next authorization listens on it.
    local sock = vim.uv.new_tcp()
    t.defer(function()
      sock:close()
    end)
    eq(0, sock:bind('127.0.0.1', redirect))
    sock:close()
    local second
    ok(oauth.authorize('demo', { timeout = 1 }, function(...)
      second = { ... }
    end))
    t.wait_for(function()
      return second ~= nil
    end, 5000, 'the second to time out')
    eq('timeout', second[3], second[2])
    eq(0, oauth.cancel_authorize('demo'))
    local n, e = oauth.cancel_authorize('../x')
    eq(0, n)
    contains(e, 'invalid account')
  end)

  it('an authorization the browser has answered is finished even when cancelled', function()
    local server = t.oauth_server()
    -- A slow token endpoint: the cancel comes while the code is exchanged.
    local token_url = server.token_url
    local token_port = tonumber(token_url:match('^http://127%.0%.0%.1:(%d+)/'))
    local relay_port = t.closed_port()
    local relay = t.relay(relay_port, token_port, 700)
    local dir = t.tmpdir()
    t.setup_for_test({
      mbsync = { config = t.standalone_mbsyncrc(dir, t.closed_port()) },
      notify = false,
      accounts = {
        demo = {
          oauth = {
            provider = 'generic',
            client_id = server.client_id,
            auth_url = server.auth_url,
            token_url = token_url:gsub(':%d+/', ':' .. relay_port .. '/', 1),
            store = { backend = 'plain', dir = dir .. '/tokens' },
          },
        },
      },
    })
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local urls = collect_urls()
    local seen = t.notifications()
    local done
    ok(oauth.authorize('demo', nil, function(...)
      done = { ... }
    end))
    t.wait_for(function()
      return #urls == 1
    end, 5000, 'the URL')
    -- The browser: the authorization server redirects it to our listener.
    local browser = vim
      .system(t.python('-c', 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)', urls[1]))
      :wait(15000)
    eq(0, browser.code, browser.stderr)
    t.wait_for(function()
      return relay.connections() > 0
    end, 5000, 'the code exchange to start')
    vim.cmd('HimalayaSync oauth cancel demo')
    eq('himalaya-sync: the authorization of demo was answered already and finishes', seen[#seen][1])
    -- Nor does a new authorization wait for it: its URL comes at once.
    local second
    ok(oauth.authorize('demo', { timeout = 1 }, function(...)
      second = { ... }
    end))
    t.wait_for(function()
      return #urls == 2
    end, 5000, 'the second URL')
    eq(nil, done, 'the first ended before the second began')
    t.wait_for(function()
      return done ~= nil
    end, 10000, 'the authorization to end')
    eq(true, done[1], done[2])
    eq(true, oauth.status('demo').has_token)
    t.wait_for(function()
      return second ~= nil
    end, 5000, 'the second to time out')
    eq('timeout', second[3], second[2])
  end)

  it('a blocking call that gives up stops listening, and says the work goes on', function()
    local dir = t.tmpdir()
    t.setup_for_test({
      mbsync = { config = t.standalone_mbsyncrc(dir, t.closed_port()) },
      notify = false,
      accounts = {
        demo = {
          oauth = {
            refresh_cmd = 'exit 1',
            store = { backend = 'command', load_cmd = 'sleep 2', save_cmd = 'cat >/dev/null', clear_cmd = 'true' },
          },
        },
      },
    })
    local wait = oauth.WAIT_MS
    oauth.WAIT_MS = 300
    t.defer(function()
      oauth.WAIT_MS = wait
    end)
    local v, err, kind = oauth.status('demo')
    eq({ nil, 'no answer for demo within 0.3 s; it goes on in the background', 'timeout' }, { v, err, kind })
    -- Nobody waits for that answer any more: it does not keep a new
    -- build from being loaded.
    local _, why = require('himalaya.sync.native').reload()
    ok(not tostring(why):find('requests are active', 1, true), why)
    -- Unset, the wait is a little longer than the engine's own limit for
    -- the call, which it gives with the request id: here a store's load.
    oauth.WAIT_MS = nil
    local id, limit = require('himalaya.sync.native').get().oauth_call('status', 'demo')
    ok(id, limit)
    eq(120, limit)
    local st, serr = oauth.status('demo')
    eq(false, st and st.has_token, serr)
  end)

  it('bad OAuth settings and arguments give one clear line', function()
    local okk, err = pcall(require('himalaya.sync').setup, { accounts = { demo = { oauth = { provider = 'yahoo' } } } })
    eq(false, okk)
    contains(err, 'himalaya_sync.accounts.demo.oauth.provider')
    okk, err = pcall(require('himalaya.sync').setup, {
      accounts = { demo = { oauth = { store = { backend = 'floppy' } } } },
    })
    eq(false, okk)
    contains(err, 'himalaya_sync.accounts.demo.oauth.store.backend')
    -- A token folder is absolute after ~ and $VAR, and is used expanded:
    -- it was taken as written, a folder named "$X" under the current one.
    okk, err = pcall(require('himalaya.sync').setup, {
      accounts = { demo = { oauth = { provider = 'google', store = { backend = 'plain', dir = 'rel/tokens' } } } },
    })
    eq(false, okk)
    contains(err, 'oauth.store.dir: expected an absolute folder path (~ and $VAR are expanded), got "rel/tokens"')
    local tmp = t.tmpdir()
    vim.env.HIMALAYA_TEST_TOKENS = tmp
    t.defer(function()
      vim.env.HIMALAYA_TEST_TOKENS = nil
    end)
    t.setup_for_test({
      accounts = {
        demo = { oauth = { provider = 'google', store = { backend = 'plain', dir = '$HIMALAYA_TEST_TOKENS/tokens' } } },
      },
    })
    ok(oauth.store_token('demo', { access_token = t.secret('expanded-dir-4a7d21'), expires_in = 3600 }))
    ok(#vim.fn.glob(tmp .. '/tokens/*', false, true) > 0, 'a token file in the expanded folder')
    require('himalaya.sync').setup({})
    local v, e, kind = oauth.get_valid_token('../etc')
    eq(nil, v)
    eq('invalid', kind)
    contains(e, 'invalid account')
    -- With a callback too: refused at once, and the callback hears it.
    local heard
    eq({ nil, e, 'invalid' }, {
      oauth.get_valid_token('../etc', function(...)
        heard = { ... }
      end),
    })
    t.wait_for(function()
      return heard ~= nil
    end, 2000, 'the callback')
    eq({ nil, e, 'invalid' }, heard)
    v, e, kind = oauth.get_valid_token('nobody')
    eq(nil, v)
    eq('config', kind)
    contains(e, 'no OAuth account "nobody"')
    -- A refresh_cmd account cannot be authorized, and is told why.
    t.setup_for_test({ accounts = { demo = { oauth = { refresh_cmd = 'exit 1' } } } })
    local told
    ok(oauth.authorize('demo', { device = true }, function(...)
      told = { ... }
    end))
    t.wait_for(function()
      return told ~= nil
    end, 5000, 'the authorization to be refused')
    eq({
      nil,
      'accounts.demo.oauth: authorize needs a provider (google, microsoft, generic); demo refreshes through refresh_cmd',
      'config',
    }, { told[1], told[2], told[3] })
    -- A bad access-token string is the caller's argument, and named so.
    eq({
      nil,
      'invalid token: the token string contains whitespace or control characters; '
        .. 'expected one access token or a JSON object',
      'invalid',
    }, { oauth.store_token('demo', 'two words') })
    eq({ nil, 'invalid token: the token string holds no token, only `null`', 'invalid' }, {
      oauth.store_token('demo', 'null'),
    })
    require('himalaya.sync').setup({})
    v, e = oauth.store_token('nobody', 42)
    eq(nil, v)
    contains(e, 'invalid token')
    -- A token that would be stored with no expiry, or with a field lost.
    for field, token in pairs({
      expires_in = { access_token = 'x', expires_in = math.huge },
      expires_at = { access_token = 'x', expires_at = 0 / 0 },
      ['1'] = { access_token = 'x', 'y' },
    }) do
      local got, err, k = oauth.store_token('nobody', token)
      eq({ nil, 'invalid' }, { got, k }, field)
      contains(err, field)
    end
    -- With a callback, every failure reaches it, those returned at once too.
    local answers = {}
    local function answer(...)
      answers[#answers + 1] = { ... }
    end
    eq({ nil, e, 'invalid' }, { oauth.store_token('nobody', 42, answer) })
    local refused = { oauth.authorize('nobody', 'device', answer) }
    eq({ nil, 'invalid' }, { refused[1], refused[3] })
    contains(refused[2], 'invalid opts')
    eq(true, oauth.refresh_token('nobody', answer))
    t.wait_for(function()
      return #answers == 3
    end, 5000, 'three answers')
    eq({ nil, e, 'invalid' }, answers[1])
    eq({ nil, refused[2], 'invalid' }, answers[2])
    eq({ nil, 'config' }, { answers[3][1], answers[3][3] })
    contains(answers[3][2], 'no OAuth account "nobody"')
  end)
end)
