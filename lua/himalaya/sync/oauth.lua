--- OAuth2 tokens that refresh themselves: `require('himalaya.sync.oauth')`.
---
--- Accounts are configured under `accounts.NAME.oauth` (see
--- |himalaya-sync-oauth|). Every function takes an optional callback and
--- then never blocks; without one it waits, bounded (see `M.WAIT_MS`).
--- Results follow the plugin's convention: `value` on success,
--- `nil, message, kind` on failure (kinds: auth, network, timeout, locked,
--- config, invalid, io). Tokens never appear in messages or notifications.
local native = require('himalaya.sync.native')

local M = {}

--- The longest a call without a callback waits (ms). Unset, a little
--- longer than the engine may take to answer that call (its limits:
--- the account's refresh lock `wait`, the store's programs, the refresh
--- script or every attempt at the provider), so that the engine's own
--- error, which says what did not answer, comes first; but at most
--- MAX_WAIT: the editor is frozen meanwhile.
---@type integer?
M.WAIT_MS = nil

--- How much longer than the engine's limit a call waits (s): its answer
--- still has to travel to the main loop.
local WAIT_SLACK = 5

--- The longest a call without a callback freezes the editor (s), whatever
--- the engine's limit: enough for a provider that never answers (three
--- requests of 30 s), while store programs that each hang to their limit
--- (up to minutes in all) are left to the background.
local MAX_WAIT = 120

---@alias himalaya.sync.OAuthCallback fun(result: any, err?: string, kind?: string)

local function bad_account(account)
  if type(account) ~= 'string' or not account:match('^[%w_%-%.@%+]+$') then
    return ('invalid account %s: expected an account name from accounts.NAME.oauth'):format(native.shown(account))
  end
end

--- Starts operation `op` in the engine; `done(result, err, kind)` gets the
--- answer, `on_prompt(data)` what `authorize` asks the user to do. Returns
--- the request id, none when it failed at once (`done` has heard why), and
--- the seconds the engine may take to answer (none for `authorize`).
---@return integer? id
---@return number? limit
local function start(op, account, arg, done, on_prompt)
  local lib, err, kind = require('himalaya.sync.manager')._ready()
  if not lib then
    done(nil, err, kind or 'config')
    return nil
  end
  local id, e = lib.oauth_call(op, account, arg)
  if not id then
    ---@cast e himalaya.sync.LibError
    done(nil, e.message, e.kind)
    return nil
  end
  ---@cast e number?
  native.on_id(id, function(ev)
    if ev.name == 'oauth_prompt' then
      if on_prompt then
        on_prompt(ev.data)
      end
      return
    end
    native.off(id)
    if ev.data.ok then
      done(ev.data.value)
    else
      done(nil, ev.data.error.message, ev.data.error.kind)
    end
  end)
  return id, e
end

--- Runs `op` with `callback` (answers later, on the main loop) or waits for
--- it, bounded (see `M.WAIT_MS`).
local function run(op, account, arg, callback, on_prompt)
  if callback ~= nil and not vim.is_callable(callback) then
    return nil, 'invalid callback: expected a function', 'invalid'
  end
  -- Refused at once, as the other bad arguments are: returned, and handed
  -- to the callback too.
  local bad = bad_account(account)
  if bad then
    return native.fail(callback, nil, bad, 'invalid')
  end
  if callback then
    start(op, account, arg, function(...)
      local args = vim.F.pack_len(...)
      vim.schedule(function()
        native.call_back(callback, vim.F.unpack_len(args))
      end)
    end, on_prompt)
    return true
  end
  local answer
  local id, limit = start(op, account, arg, function(...)
    answer = vim.F.pack_len(...)
  end, on_prompt)
  -- Only `authorize` has no limit, and it always has a callback.
  local wait_ms = M.WAIT_MS or math.ceil(math.min((limit or 0) + WAIT_SLACK, MAX_WAIT) * 1000)
  if not answer then
    local done, why = vim.wait(wait_ms, function()
      return answer ~= nil
    end, 10)
    if not done then
      -- What runs in the engine is left to end on its own (a refresh
      -- still stores its token), unheard: nobody waits for its answer,
      -- which would keep a reload of the library refused until it came.
      native.off(assert(id))
    end
    -- -2: the user pressed Ctrl-C.
    if not done and why == -2 then
      return nil, ('stopped waiting for %s (interrupted); it goes on in the background'):format(account), 'cancelled'
    elseif not done then
      return nil,
        ('no answer for %s within %g s; it goes on in the background'):format(account, wait_ms / 1000),
        'timeout'
    end
  end
  return vim.F.unpack_len(answer)
end

--- A valid access token, refreshed first when it expires within the
--- account's margin (default 5 min). A valid cached token returns at once.
---@param account string
---@param callback? fun(token?: string, err?: string, kind?: string)
---@return string|boolean|nil token the token (true when a callback is given)
---@return string? err
---@return string? kind
function M.get_valid_token(account, callback)
  return run('token', account, nil, callback)
end

--- Refreshes the token now, whatever its expiry.
---@param account string
---@param callback? fun(ok?: boolean, err?: string, kind?: string)
---@return boolean? ok
---@return string? err
---@return string? kind
function M.refresh_token(account, callback)
  return run('refresh', account, nil, callback)
end

--- Stores a token: a table (`access_token`, `refresh_token`, `expires_at`
--- or `expires_in`, `scope`, `token_type`) or a bare access-token string.
---@param account string
---@param token table|string
---@param callback? fun(ok?: boolean, err?: string, kind?: string)
---@return boolean? ok
---@return string? err
---@return string? kind
function M.store_token(account, token, callback)
  if type(token) ~= 'table' and type(token) ~= 'string' then
    return native.fail(callback, nil, 'invalid token: expected a table or an access-token string', 'invalid')
  end
  if type(token) == 'table' then
    for k, v in pairs(token) do
      -- Keys the engine would never see (list items), and numbers JSON
      -- cannot carry (an infinite expiry would arrive as none at all).
      if type(k) ~= 'string' then
        return native.fail(callback, nil, ('invalid token: unexpected field %s'):format(native.shown(k)), 'invalid')
      elseif type(v) == 'number' and not (v > -math.huge and v < math.huge) then
        return native.fail(
          callback,
          nil,
          ('invalid token.%s: expected a finite number, got %s'):format(k, v),
          'invalid'
        )
      end
    end
  end
  return run('store', account, token, callback)
end

--- Removes everything stored for the account.
---@param account string
---@param callback? fun(ok?: boolean, err?: string, kind?: string)
---@return boolean? ok
---@return string? err
---@return string? kind
function M.clear_token(account, callback)
  return run('clear', account, nil, callback)
end

--- `expires_in` of a status for people: "expires in 3 h 20 min",
--- "expires in 45 s", "expired 2 min ago".
---@param s? number seconds
---@return string
function M._expiry(s)
  if not s then
    return 'unknown expiry'
  end
  local function span(n)
    n = math.abs(n)
    if n < 120 then
      return ('%d s'):format(n)
    elseif n < 7200 then
      return ('%d min'):format(math.floor(n / 60))
    end
    return ('%d h %d min'):format(math.floor(n / 3600), math.floor(n % 3600 / 60))
  end
  return s >= 0 and ('expires in ' .. span(s)) or ('expired ' .. span(s) .. ' ago')
end

---@class himalaya.sync.OAuthStatus
---@field account string
---@field provider? string
---@field store string backend in use
---@field has_token boolean
---@field has_refresh_token boolean
---@field expires_in? integer seconds until the access token expires (negative: expired)
---@field obtained_at? integer unix time the stored token was obtained
---@field last_refresh? integer unix time of this Neovim's last refresh
---@field last_error? {kind: string, message: string, time: integer}
---@field store_error? string why the store could not be read

--- The account's token state; never the token itself.
---@param account string
---@param callback? fun(status?: himalaya.sync.OAuthStatus, err?: string, kind?: string)
---@return himalaya.sync.OAuthStatus? status
---@return string? err
---@return string? kind
function M.status(account, callback)
  return run('status', account, nil, callback)
end

local AUTHORIZE_OPTIONS = native.known_keys({ 'device', 'timeout' })

--- Asks the user to grant access: in the browser (authorization code with
--- PKCE and a one-shot listener on 127.0.0.1), or with `{ device = true }`
--- by a code entered on another device. Never blocks; the result goes to
--- `callback` (or a notification).
---@param account string
---@param opts? {device?: boolean, timeout?: number}
---@param callback? fun(ok?: boolean, err?: string, kind?: string)
---@return boolean? started `true`: the answer goes to the callback
---@return string? err
---@return string? kind
function M.authorize(account, opts, callback)
  if opts ~= nil and type(opts) ~= 'table' then
    return native.fail(callback, nil, 'invalid opts: expected a table like { device = true }', 'invalid')
  end
  opts = opts or {}
  local unknown = native.unknown_key(opts, AUTHORIZE_OPTIONS, 'opts', 'option')
  if unknown then
    return native.fail(callback, nil, unknown, 'invalid')
  end
  for k, v in pairs(opts) do
    local bad = (k == 'device' and type(v) ~= 'boolean' and 'expected a boolean')
      or (k == 'timeout' and not (type(v) == 'number' and v >= 1 and v <= 86400) and 'expected seconds from 1 to 86400')
    if bad then
      return native.fail(callback, nil, ('invalid opts.%s %s: %s'):format(k, native.shown(v), bad), 'invalid')
    end
  end
  callback = callback
    or function(ok, err)
      if ok then
        vim.notify(('himalaya-sync: %s authorized'):format(account))
      else
        vim.notify(('himalaya-sync: authorizing %s failed: %s'):format(account, err), vim.log.levels.ERROR)
      end
    end
  return run('authorize', account, opts, callback, function(p)
    if p.url then
      local opened = vim.ui.open and select(2, pcall(vim.ui.open, p.url))
      vim.notify(
        ('himalaya-sync: %s %s'):format(opened and 'if no browser opened, visit' or 'to authorize, visit', p.url)
      )
    elseif p.user_code then
      vim.notify(
        ('himalaya-sync: to authorize %s, open %s and enter the code %s'):format(
          account,
          p.verification_uri,
          p.user_code
        )
      )
    end
  end)
end

--- Ends the authorizations still waiting for the user: of `account`, or
--- of every account. Each one's callback gets kind `cancelled`, and a fixed
--- `redirect_port` is free again at once. One whose answer has reached
--- the plugin finishes (its single-use code is exchanged, the tokens stored).
---@param account? string
---@return integer cancelled how many were waiting
---@return string? err
function M.cancel_authorize(account)
  local cancelled, _, err = M._cancel_authorize(account)
  return cancelled, err
end

--- cancel_authorize(), also saying how many authorizations it found
--- finishing (their answer had arrived), for `:HimalayaSync oauth cancel`.
---@param account? string
---@return integer cancelled
---@return integer finishing
---@return string? err
function M._cancel_authorize(account)
  if account ~= nil then
    local bad = bad_account(account)
    if bad then
      return 0, 0, bad
    end
  end
  -- Nothing can wait before the library is loaded: do not load it for this.
  if not native.is_loaded() then
    return 0, 0
  end
  local lib = native.get()
  if not lib then
    return 0, 0
  end
  return lib.oauth_cancel_authorize(account)
end

--- Names of the accounts with OAuth configured.
---@return string[]
function M.accounts()
  local ok, cfg = pcall(require('himalaya.sync.config').get)
  local names = {}
  for name, a in pairs(ok and cfg.accounts or {}) do
    if a.oauth then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  return names
end

return M
