--- Configuration: defaults, `vim.g.himalaya_sync`, and `setup(opts)`.
---
--- Both sources take the same table. Every value is validated and an error
--- names the full path of the bad field (`himalaya_sync.mbsync.timeout`).
local M = {}

---@class himalaya.sync.MbsyncConfig
---@field cmd string mbsync executable (default "mbsync")
---@field config? string path of the mbsyncrc (default: mbsync's own lookup)
---@field timeout number seconds without output or progress before a sync is killed (default 120)
---@field extra_args string[] extra arguments for every mbsync run

---@class himalaya.sync.AccountConfig
---@field full? string mbsync target for a full sync (default: the channel or group named like the account)
---@field inbox? string mbsync target for an inbox sync (default: channel `NAME-inbox`, else the part of NAME that syncs INBOX)
---@field folders? string[] folders offered for selective syncs
---@field throttle? {kbps: number} bandwidth limit, kB/s each way (through mbsync's Tunnel; TLS stays end to end)
---@field refresh? string|fun(account: string, done: fun(ok: boolean, err?: string)) refreshes credentials after an auth failure (a function, or a Vimscript function's name); the sync then runs once more
---@field oauth? himalaya.sync.OAuthConfig OAuth2 tokens for this account (see |himalaya-sync-oauth|)

---@class himalaya.sync.OAuthStoreConfig
---@field backend 'secret-service'|'gpg'|'encrypted'|'command'|'plain' where tokens live (default 'secret-service')
---@field dir? string folder of the file backends (default: state_dir/oauth/tokens)
---@field key_cmd? string encrypted: command printing the key (default: a key kept in the Secret Service)
---@field recipient? string gpg: key to encrypt for
---@field gpg? string gpg: program (default "gpg")
---@field service? string secret-service: service attribute (default "himalaya-sync")
---@field load_cmd? string command: prints the token (JSON or bare)
---@field save_cmd? string command: reads the token JSON on stdin
---@field clear_cmd? string command: removes the token

---@class himalaya.sync.OAuthConfig
---@field provider? 'google'|'microsoft'|'generic' who issues tokens (none: only `refresh_cmd`)
---@field tenant? string microsoft: 'common' (default), 'organizations', 'consumers' or a tenant id
---@field client_id? string OAuth client id (google: default $GMAIL_CLIENT_ID)
---@field client_secret? string client secret (google: default $GMAIL_CLIENT_SECRET)
---@field client_secret_env? string environment variable holding the client secret
---@field client_secret_cmd? string command printing the client secret
---@field auth_url? string generic: authorization endpoint
---@field token_url? string generic: token endpoint
---@field device_url? string generic: device authorization endpoint
---@field scopes? string[] scopes (default: the provider's IMAP scope)
---@field redirect_port? integer fixed loopback port for the browser flow (default: any free port)
---@field refresh_cmd? string your own refresh script: prints the new token (JSON or bare) or stores it itself
---@field margin? number seconds before expiry at which a token is refreshed (default 300)
---@field wait? number seconds to wait for a refresh another process is doing (default 30)
---@field himalaya_keyring? string a himalaya CLI (v1) account: its keyring tokens are used while the store has none
---@field store? himalaya.sync.OAuthStoreConfig

---@class himalaya.sync.RetryConfig
---@field base number seconds before the first retry (default 10)
---@field factor number growth per retry (default 2)
---@field cap number longest wait in seconds (default 300)
---@field max_attempts integer retries after the first attempt; 0 disables (default 3)
---@field jitter number random spread, 0-1 (default 0.2)

---@class himalaya.sync.AutoSyncConfig
---@field enabled boolean sync on a timer (default false)
---@field interval number minutes between syncs (default 15)
---@field type 'full'|'inbox' what the timer syncs (default 'full')
---@field accounts? string[] accounts to sync (default: every group and every channel that no group syncs)
---@field smart boolean check the server first (STATUS) and sync only what changed (default false)

---@class himalaya.sync.IdleConfig
---@field enabled boolean push: IMAP IDLE watchers start a sync on new mail (default false)
---@field accounts? string[] accounts to watch (default: those auto-sync syncs)
---@field folders string[] folders to watch, one connection each (default { 'INBOX' })
---@field reidle number seconds before IDLE is renewed, under the server's limit (default 1500)

---@class himalaya.sync.NotifyConfig
---@field enabled boolean notifications at all (default true)
---@field start boolean when a sync starts (default false)
---@field success boolean when a sync succeeds (default true)
---@field error boolean when a sync fails (default true)
---@field auto boolean also for syncs started by the auto-sync timer (default false)

---@class himalaya.sync.Config
---@field lock_dir? string folder for lock files (default: $XDG_RUNTIME_DIR/himalaya-sync/locks)
---@field state_dir? string folder for the sync history (default: stdpath('state')/himalaya-sync)
---@field mbsync himalaya.sync.MbsyncConfig
---@field accounts table<string, himalaya.sync.AccountConfig>
---@field max_parallel integer accounts synced at once (default 2)
---@field max_connections integer mbsync processes for one full sync of a channel, each on its own folders (default 1: off)
---@field retry himalaya.sync.RetryConfig
---@field auto_sync himalaya.sync.AutoSyncConfig
---@field idle himalaya.sync.IdleConfig
---@field notify himalaya.sync.NotifyConfig setup() and vim.g.himalaya_sync also take true or false (enabled)
---@field uidvalidity 'repair'|'ask'|'off' when the server renumbers a folder: repair it without loss, ask first, or only report (default 'repair')
---@field responsive boolean while syncs run, ask Linux (6.12+) for a short time slice for Neovim's main thread so it never waits behind mbsync for a CPU (default true)
---@field log boolean write a log to stdpath('log')/himalaya-sync.log (default true)
---@field legacy_commands boolean also create the original plugin's commands (default false)

---@type himalaya.sync.Config
M.defaults = {
  lock_dir = nil,
  state_dir = nil,
  mbsync = { cmd = 'mbsync', config = nil, timeout = 120, extra_args = {} },
  accounts = {},
  max_parallel = 2,
  max_connections = 1,
  retry = { base = 10, factor = 2, cap = 300, max_attempts = 3, jitter = 0.2 },
  auto_sync = { enabled = false, interval = 15, type = 'full', accounts = nil, smart = false },
  idle = { enabled = false, accounts = nil, folders = { 'INBOX' }, reidle = 1500 },
  notify = { enabled = true, start = false, success = true, error = true, auto = false },
  uidvalidity = 'repair',
  responsive = true,
  log = true,
  legacy_commands = false,
}

-- In the registry (native.state), so that a plugin reloader's new copy of
-- this module keeps the options setup() was given.
---@type {user_opts: table?}
local S = require('himalaya.sync.native').state('config', {})

--- The last merge and what it came from: get() runs on every sync start and
--- notification, and merging and validating again each time cost the editor
--- about 0.1 ms of CPU per call.
---@type {g: any, user: table?, cfg: himalaya.sync.Config}?
local cached

--- Raises the error for a bad value at `path`. The value itself is shown
--- unless `hide`: then only its type, for fields that hold secrets or
--- commands (which often carry one inline) and for unknown keys (a typo of
--- such a field): the message reaches notifications, :checkhealth and the
--- log.
---@param path string
---@param expected string
---@param value any
---@param hide? boolean
local function fail(path, expected, value, hide)
  local native = require('himalaya.sync.native')
  local got = value == nil and 'nothing' or ('a %s'):format(type(value))
  if not hide then
    got = native.shown(value)
  end
  error(('himalaya-sync: invalid config %s: expected %s, got %s'):format(native.cut(path), expected, got), 0)
end

local function check_table_of_strings(path, v)
  if type(v) ~= 'table' then
    fail(path, 'a list of strings', v)
  end
  for i, s in ipairs(v) do
    if type(s) ~= 'string' then
      fail(('%s[%d]'):format(path, i), 'a string', s)
    end
  end
end

--- A boolean, or Vimscript's 0 or 1 for one (what `let g:himalaya_sync`
--- gives for false and true), returned as a boolean.
---@param path string
---@param v any
---@return boolean
local function boolean(path, v)
  if v == 0 or v == 1 then
    return v == 1
  elseif type(v) ~= 'boolean' then
    fail(path, 'true or false', v)
  end
  return v
end

--- The longest time accepted for any timeout or wait (a day).
M.MAX_SECONDS = 86400

local function number_between(min, max)
  return function(path, v)
    if type(v) ~= 'number' or not (v >= min and v <= max) then
      fail(path, ('a number from %s to %s'):format(min, max), v)
    end
  end
end

---@type fun(opts: any, spec: table, path: string): table
local validate

--- Whether `v` is a string of 1 to `max` bytes without control characters
--- (what a path, a name or an argument may be: a NUL or a newline would
--- break it later, and less clearly).
---@param v any
---@param max integer
---@return boolean
function M.is_plain(v, max)
  return type(v) == 'string' and v ~= '' and #v <= max and not v:find('[%z\1-\31\127]')
end

--- Whether `s` is UTF-8 text (the engine takes names as such).
---@param s string
---@return boolean
function M.is_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1
      or (c >= 0xC2 and c <= 0xDF) and 2
      or (c >= 0xE0 and c <= 0xEF) and 3
      or (c >= 0xF0 and c <= 0xF4) and 4
    if not len then
      return false
    end
    for k = i + 1, i + len - 1 do
      local b = s:byte(k)
      if not b or b < 0x80 or b > 0xBF then
        return false
      end
    end
    i = i + len
  end
  return true
end

--- What the engine takes as an account name (targets::validate_account):
--- 1 to 100 bytes of letters, digits and _ - . @ +, not starting with -,
--- no `..`. Letters beyond ASCII are left to the engine to judge.
local ACCOUNT_RULE = '1 to 100 bytes of letters, digits and _ - . @ +, not starting with -, no ..'

---@param v any
---@return boolean
local function account_name(v)
  return type(v) == 'string'
    and #v <= 100
    and v:match('^[%w_%-%.@%+\128-\255]+$') ~= nil
    and not vim.startswith(v, '-')
    and not v:find('..', 1, true)
    and M.is_utf8(v)
end

--- A list of account names (auto_sync.accounts, idle.accounts).
local function account_list(path, v)
  if v == nil then
    return
  end
  check_table_of_strings(path, v)
  for i, name in ipairs(v) do
    if not account_name(name) then
      fail(('%s[%d]'):format(path, i), 'an account name: ' .. ACCOUNT_RULE, name)
    end
  end
end

--- A validator for a non-empty string; with `hide` (a secret or a shell
--- command) a bad value is never shown.
---@param what string
---@param hide? boolean
local function nonempty_string(what, hide)
  return function(path, v)
    if type(v) ~= 'string' or v == '' then
      fail(path, what, v, hide)
    end
  end
end

--- A validator for a path, program, mbsync target or argument (see
--- M.is_plain), with `no_dash` not starting with `-` (mbsync would read an
--- option).
---@param what string
---@param max integer
---@param no_dash? boolean
local function plain_string(what, max, no_dash)
  return function(path, v)
    if not M.is_plain(v, max) or (no_dash and vim.startswith(v, '-')) then
      fail(path, what, v)
    end
  end
end

--- nonempty_string for a secret or a shell command.
local function secret_string(what)
  return nonempty_string(what, true)
end

--- A validator accepting exactly one of `values` (two or more strings).
---@param values string[]
local function one_of(values)
  local quoted = vim.tbl_map(function(x)
    return ('"%s"'):format(x)
  end, values)
  local what = table.concat(quoted, ', ', 1, #quoted - 1) .. ' or ' .. quoted[#quoted]
  return function(path, v)
    if not vim.tbl_contains(values, v) then
      fail(path, what, v)
    end
  end
end

local function url(path, v)
  if type(v) ~= 'string' or not v:match('^https?://[^%s]+$') then
    fail(path, 'an http(s) URL', v)
  end
end

--- A folder every Neovim shares (locks, history, tokens): absolute after ~ and
--- $VAR, so that it names the same folder wherever Neovim was started.
local function shared_dir(path, v)
  local what = 'an absolute folder path (~ and $VAR are expanded)'
  if v ~= nil then
    plain_string(what, 4096)(path, v)
    if not vim.startswith(vim.fs.normalize(v), '/') then
      fail(path, what, v)
    end
  end
end

--- `accounts.NAME.oauth`: see |himalaya-sync-oauth|.
local oauth_schema = {
  provider = one_of({ 'google', 'microsoft', 'generic' }),
  tenant = nonempty_string('"common", "organizations", "consumers" or a tenant id'),
  client_id = nonempty_string('a client id'),
  client_secret = secret_string('a client secret'),
  client_secret_env = nonempty_string('an environment variable name'),
  client_secret_cmd = secret_string('a shell command'),
  auth_url = url,
  token_url = url,
  device_url = url,
  scopes = function(path, v)
    check_table_of_strings(path, v)
  end,
  redirect_port = function(path, v)
    if type(v) ~= 'number' or v < 1 or v > 65535 or v % 1 ~= 0 then
      fail(path, 'a port from 1 to 65535', v)
    end
  end,
  refresh_cmd = secret_string('a shell command'),
  himalaya_keyring = nonempty_string('a himalaya account name (its keyring entries are read while the store is empty)'),
  margin = number_between(0, M.MAX_SECONDS),
  wait = number_between(0, M.MAX_SECONDS),
  store = {
    backend = one_of({ 'secret-service', 'gpg', 'encrypted', 'command', 'plain' }),
    dir = shared_dir,
    key_cmd = secret_string('a shell command'),
    recipient = nonempty_string('a GPG key id or e-mail'),
    gpg = nonempty_string('a program name or path'),
    service = nonempty_string('a Secret Service name'),
    load_cmd = secret_string('a shell command'),
    save_cmd = secret_string('a shell command'),
    clear_cmd = secret_string('a shell command'),
  },
}

--- The rules of `accounts.NAME.oauth` that tie fields together, checked on
--- the merged configuration (the fields may come from two layers). The
--- engine checks them again when it is configured, but there one account's
--- mistake would stop the syncs of every account: here setup() says so.
---@param path string
---@param o table the account's oauth table, its fields checked already
local function check_oauth_whole(path, o)
  if o.provider == nil and o.refresh_cmd == nil then
    fail(path, 'a provider or a refresh_cmd in it', o, true)
  end
  local secrets = 0
  for _, k in ipairs({ 'client_secret', 'client_secret_env', 'client_secret_cmd' }) do
    secrets = secrets + (o[k] ~= nil and 1 or 0)
  end
  if secrets > 1 then
    fail(path, 'only one of client_secret, client_secret_env and client_secret_cmd', o, true)
  end
  local store = o.store or {}
  local needs = ({ gpg = { 'recipient' }, command = { 'load_cmd', 'save_cmd' } })[store.backend] or {}
  for _, k in ipairs(needs) do
    if store[k] == nil then
      fail(('%s.store.%s'):format(path, k), ('a value (store.backend = %q needs it)'):format(store.backend), nil, true)
    end
  end
end

--- Field checkers: one per known key; unknown keys are errors too, since a
--- typo silently ignored is worse than a clear message. A checker may
--- return the value normalised (see M.validate).
local schema = {
  lock_dir = shared_dir,
  state_dir = shared_dir,
  notify = function(path, v)
    if type(v) ~= 'table' then
      if type(v) ~= 'boolean' and v ~= 0 and v ~= 1 then
        fail(path, 'true, false or a table', v)
      end
      return boolean(path, v)
    end
    local out = {}
    for k, b in pairs(v) do
      if not vim.tbl_contains({ 'enabled', 'start', 'success', 'error', 'auto' }, k) then
        fail(path .. '.' .. tostring(k), 'one of enabled, start, success, error, auto', b, true)
      end
      out[k] = boolean(path .. '.' .. k, b)
    end
    return out
  end,
  log = boolean,
  responsive = boolean,
  legacy_commands = boolean,
  uidvalidity = one_of({ 'repair', 'ask', 'off' }),
  max_parallel = function(path, v)
    if type(v) ~= 'number' or v < 1 or v > 64 or v % 1 ~= 0 then
      fail(path, 'a whole number from 1 to 64', v)
    end
  end,
  max_connections = function(path, v)
    if type(v) ~= 'number' or v < 1 or v > 64 or v % 1 ~= 0 then
      fail(path, 'a whole number from 1 to 64', v)
    end
  end,
  retry = {
    base = number_between(0, M.MAX_SECONDS),
    factor = number_between(1, 100),
    cap = number_between(0, M.MAX_SECONDS),
    max_attempts = function(path, v)
      if type(v) ~= 'number' or v < 0 or v > 100 or v % 1 ~= 0 then
        fail(path, 'a whole number from 0 to 100', v)
      end
    end,
    jitter = function(path, v)
      if type(v) ~= 'number' or not (v >= 0 and v <= 1) then
        fail(path, 'a number from 0 to 1', v)
      end
    end,
  },
  auto_sync = {
    enabled = boolean,
    interval = function(path, v)
      -- At least a second: a smaller interval would run a tick on the main
      -- loop every millisecond and keep mbsync logging in without a pause.
      if type(v) ~= 'number' or not (v >= 1 / 60 and v <= 1440) then
        fail(path, 'minutes from 1/60 (one second) to 1440', v)
      end
    end,
    type = one_of({ 'full', 'inbox' }),
    accounts = account_list,
    smart = boolean,
  },
  idle = {
    enabled = boolean,
    accounts = account_list,
    folders = function(path, v)
      check_table_of_strings(path, v)
      if #v == 0 then
        fail(path, 'at least one folder', v)
      end
    end,
    reidle = function(path, v)
      if type(v) ~= 'number' or not (v >= 1 and v <= 1740) then
        fail(path, 'seconds from 1 to 1740 (servers end IDLE after 30 min)', v)
      end
    end,
  },
  mbsync = {
    cmd = plain_string('an executable name or path', 4096),
    config = function(path, v)
      if v ~= nil then
        plain_string('a file path', 4096)(path, v)
      end
    end,
    timeout = function(path, v)
      -- Under a second every sync would be stopped before the server
      -- has answered.
      if type(v) ~= 'number' or not (v >= 1 and v <= M.MAX_SECONDS) then
        fail(path, ('seconds from 1 to %d'):format(M.MAX_SECONDS), v)
      end
    end,
    extra_args = function(path, v)
      check_table_of_strings(path, v)
      for i, arg in ipairs(v) do
        local p = ('%s[%d]'):format(path, i)
        plain_string('an argument without control characters', 4096)(p, arg)
        -- The progress, the folder names and the error kinds are read from
        -- what mbsync prints; these change it, or what mbsync does.
        -- Short options combine (`-Vl`); none of mbsync's (1.3 to 1.5)
        -- takes any of these letters as a suffix, so any of them in a
        -- cluster is that option.
        local short = arg:match('^%-(%w+)$') or ''
        local clash = nil ---@type string?
        if short:find('D') or arg:match('^%-%-debug') then
          clash = 'debug output'
        elseif short:find('q') or arg == '--quiet' then
          clash = 'quiet output'
        elseif short:find('c') or arg:match('^%-%-config') then
          clash = 'a config file (set mbsync.config)'
        elseif short:find('l') or arg:match('^%-%-list') then
          clash = 'a folder listing instead of a sync'
        elseif short:find('[vh]') or arg == '--version' or arg == '--help' then
          -- mbsync prints it and exits 0: every sync would pass for done.
          clash = 'no sync at all (-v is the version, not verbose output)'
        elseif short:find('y') or arg == '--dry-run' then
          clash = 'a dry run, which would pass for a sync'
        elseif short:find('e') or arg == '--ext-exit' then
          clash = 'other exit codes, which tell how a sync ended'
        elseif short:find('a') or arg == '--all' then
          -- Every channel would sync under the lock of one account.
          clash = 'every channel (sync each account by its name)'
        elseif arg ~= '--' and not arg:match('^%-') then
          clash = 'a channel or group besides the account synced (sync it as an account)'
        end
        if clash then
          fail(
            p,
            ('an argument that leaves mbsync syncing and printing its progress (this one asks for %s)'):format(clash),
            arg
          )
        end
      end
    end,
  },
  accounts = function(path, v)
    if type(v) ~= 'table' then
      fail(path, 'a table of accounts', v)
    end
    for name, acct in pairs(v) do
      local p = ('%s.%s'):format(path, tostring(name))
      if type(name) == 'number' then
        -- A list (`accounts = { 'gmail' }`): the names are the keys.
        fail(path, 'a table keyed by account name, e.g. { gmail = { inbox = "gmail-inbox" } }', v)
      end
      if not account_name(name) then
        fail(path, 'account names: ' .. ACCOUNT_RULE, name)
      end
      -- Hidden like the oauth table's values: an account holds them.
      if type(acct) ~= 'table' then
        fail(p, 'a table', acct, true)
      end
      for k, val in pairs(acct) do
        if k == 'full' or k == 'inbox' then
          plain_string('an mbsync channel or group name (or channel:folder), not starting with -', 1000, true)(
            p .. '.' .. k,
            val
          )
        elseif k == 'folders' then
          check_table_of_strings(p .. '.folders', val)
          for i, f in ipairs(val) do
            plain_string('a folder name, not starting with -', 1000, true)(('%s.folders[%d]'):format(p, i), f)
          end
        elseif k == 'refresh' then
          -- A Vimscript Funcref reaches Lua as vim.NIL: g:himalaya_sync
          -- can only name the function.
          if val == vim.NIL then
            fail(
              p .. '.refresh',
              "a function(account, done), or in Vimscript the function's name ('refresh': 'MyRefresh'): "
                .. 'a Funcref does not come through g:himalaya_sync',
              val
            )
          elseif not (vim.is_callable(val) or type(val) == 'string' and val:match('^[%a_][%w_#.:]*$')) then
            -- Hidden: a shell command given here by mistake may carry a secret.
            fail(p .. '.refresh', "a function(account, done) or a Vimscript function's name", val, true)
          end
        elseif k == 'oauth' then
          -- Its tokens are stored in files named after the account and
          -- handed to your commands: ASCII names only there.
          if name:find('[\128-\255]') then
            fail(
              p .. '.oauth',
              'an account whose name is ASCII letters, digits and _ - . @ + (its tokens are stored under that name)',
              name
            )
          end
          validate(val, oauth_schema, p .. '.oauth')
        elseif k == 'throttle' then
          local kbps = type(val) == 'table' and val.kbps
          if type(kbps) ~= 'number' or kbps < 1 or kbps > 1e6 or kbps % 1 ~= 0 or next(val, next(val)) ~= nil then
            fail(p .. '.throttle', '{ kbps = N } with a whole number N from 1 to 1000000', val)
          end
        else
          fail(p .. '.' .. tostring(k), 'one of full, inbox, folders, throttle, refresh, oauth', val, true)
        end
      end
    end
  end,
}

--- The tables whose values are secrets or commands: a string, number or
--- list given in place of one of them may well be the secret itself.
local SECRET_TABLES = { [oauth_schema] = true, [oauth_schema.store] = true }

function validate(opts, spec, path)
  if type(opts) ~= 'table' then
    fail(path, 'a table', opts, SECRET_TABLES[spec])
  end
  local out = opts
  for k, v in pairs(opts) do
    local p = path .. '.' .. tostring(k)
    local check = spec[k]
    local normal
    if check == nil then
      local known = vim.tbl_keys(spec)
      table.sort(known)
      fail(p, 'one of the known options (' .. table.concat(known, ', ') .. ')', v, true)
    elseif type(check) == 'table' then
      normal = validate(v, check, p)
    else
      normal = check(p, v)
    end
    if normal ~= nil and normal ~= v then
      -- Copied before the first change: the caller's table stays as given.
      if out == opts then
        out = vim.tbl_extend('force', {}, opts)
      end
      out[k] = normal
    end
  end
  return out
end

--- Checks a user table and raises an error naming the bad field. Returns
--- it normalised: Vimscript's 0 and 1 given for a boolean are false and
--- true (in a copy; `opts` itself is left as it is).
---@param opts table
---@param root? string how the table is named in errors (default `himalaya_sync`)
---@return table
function M.validate(opts, root)
  return validate(opts, schema, root or 'himalaya_sync')
end

--- One layer of options ready to merge: `notify = BOOL` is short for
--- `notify = { enabled = BOOL }`, so that it keeps the other `notify`
--- fields of the layers below and above it instead of replacing them.
---@param opts? table
---@return table
local function layer(opts)
  if opts and type(opts.notify) == 'boolean' then
    return vim.tbl_extend('force', opts, { notify = { enabled = opts.notify } })
  end
  return opts or {}
end

--- defaults < `g` < `user` (both validated already), checked as a whole.
---@param g? table
---@param user? table
---@return himalaya.sync.Config
local function merge(g, user)
  local cfg = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), layer(g), layer(user))
  for name, acct in pairs(cfg.accounts) do
    if acct.oauth then
      check_oauth_whole(('himalaya_sync.accounts.%s.oauth'):format(name), acct.oauth)
    end
  end
  return cfg
end

--- How errors in |g:himalaya_sync| name its fields (`g:himalaya_sync.retry.base`),
--- so that one raised by setup() (which merges it) says where the bad value is.
local G_ROOT = 'g:himalaya_sync'

--- Stores a copy of the options from setup() after validating them, also
--- as merged with |g:himalaya_sync| (changing the table afterwards changes
--- nothing: call setup() again).
---@param opts? table
function M.setup(opts)
  local user = vim.deepcopy(M.validate(opts or {}))
  -- Nothing is stored when g:himalaya_sync is invalid, or with these
  -- options makes an invalid whole: the error names the field.
  local g = vim.g.himalaya_sync
  merge(g ~= nil and M.validate(g, G_ROOT) or nil, user)
  S.user_opts = user
end

--- The merged configuration: defaults < vim.g.himalaya_sync < setup().
--- The table is shared between callers until the configuration changes:
--- read it, never modify it.
---@return himalaya.sync.Config
function M.get()
  -- Each read of vim.g makes a fresh copy: compare contents, not identity.
  local g = vim.g.himalaya_sync
  if cached and cached.user == S.user_opts and vim.deep_equal(cached.g, g) then
    return cached.cfg
  end
  local cfg = merge(g ~= nil and M.validate(g, G_ROOT) or nil, S.user_opts)
  cached = { g = g, user = S.user_opts, cfg = cfg }
  return cfg
end

return M
