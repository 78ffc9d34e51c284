--- The original plugin's modules (`neotex.plugins.tools.himalaya.sync.*`),
--- as its callers use them. Each is the new module plus the original
--- functions that have a meaning here, with the original's arguments and
--- answers: `mbsync.sync(channel, { callback = function(success, err) })`,
--- `manager.cancel_sync()` answering true or false, channel names from
--- `lock.get_active_locks()`. So a configuration written for the original
--- keeps working when its require paths lead here. The new modules are left
--- as they are; `:help himalaya-sync-compat` lists what is kept.
local M = {}

---@param new table
---@param kept table
---@return table
local function legacy(new, kept)
  return setmetatable(kept, { __index = new })
end

local manager = require('himalaya.sync.manager')
local mbsync = require('himalaya.sync.mbsync')
local lock = require('himalaya.sync.lock')
local native = require('himalaya.sync.native')

--- Cancels every sync of this Neovim: true when one was asked to stop.
---@return boolean
local function cancel_all()
  return manager.cancel_sync() > 0
end

---@class himalaya.sync.OriginalProgress: himalaya.sync.Progress
---@field status string `syncing` while the sync runs, else how it ended
---@field current_folder? string
---@field folders_done number
---@field folders_total number
---@field current_operation string
---@field messages_processed number
---@field messages_total number
---@field total_new number
---@field total_updated number
---@field total_deleted number
---@field start_time? number

---@param c any a himalaya.sync.Counter, or nothing
---@return number done
---@return number total
local function done_total(c)
  if type(c) ~= 'table' then
    return 0, 0
  end
  return tonumber(c.done) or 0, tonumber(c.total) or 0
end

---@param side? himalaya.sync.Side
---@param field string
---@return number done
---@return number total
local function counter(side, field)
  return done_total(type(side) == 'table' and side[field] or nil)
end

--- A progress with the original's fields beside the new ones, so that code
--- written for the original (its sidebar header: "INBOX 2/5 - Downloaded
--- 120/4000") shows the sync: the folders done of all, the folder, and the
--- messages of what mbsync does now (downloads first, then uploads).
--- `status` is the original's `syncing` while the sync runs, else how it
--- ended.
---@param p? himalaya.sync.Progress
---@param info {start_time?: number, status?: string} the sync
---@return himalaya.sync.OriginalProgress?
local function original_progress(p, info)
  if type(p) ~= 'table' then
    return nil
  end
  local o = vim.tbl_extend('force', {}, p) --[[@as himalaya.sync.OriginalProgress]]
  o.status = (info.status == nil or info.status == 'running') and 'syncing' or info.status
  o.start_time = info.start_time
  o.current_folder = p.box
  o.folders_done, o.folders_total = done_total(p.boxes)
  if o.folders_total == 0 then
    o.folders_done, o.folders_total = done_total(p.channels)
  end
  local pulled, to_pull = counter(p.near, 'new')
  local pushed, to_push = counter(p.far, 'new')
  local near_flags, near_flag_total = counter(p.near, 'flags')
  local far_flags, far_flag_total = counter(p.far, 'flags')
  o.messages_processed, o.messages_total, o.current_operation = 0, 0, 'Synchronizing'
  if pulled < to_pull or (to_pull > 0 and to_push == 0) then
    o.messages_processed, o.messages_total, o.current_operation = pulled, to_pull, 'Downloading'
  elseif to_push > 0 then
    o.messages_processed, o.messages_total, o.current_operation = pushed, to_push, 'Uploading'
  elseif near_flag_total + far_flag_total > 0 then
    o.current_operation = 'Updating flags'
  end
  o.total_new = pulled + pushed
  o.total_updated = near_flags + far_flags
  o.total_deleted = 0
  for _, side in ipairs({ p.near, p.far }) do
    for _, field in ipairs({ 'trash', 'expunge' }) do
      o.total_deleted = o.total_deleted + (counter(side, field))
    end
  end
  return o
end

---@class himalaya.sync.OriginalHistory
---@field last_full_sync? integer Unix seconds when the newest sync ended
---@field total_syncs_today? integer syncs of every account ended today
---@field last_count_date? string YYYY-MM-DD, the day counted
---@field last_error? string the newest error's message
---@field last_error_time? integer
---@field last_error_type? string the type of the sync that failed, when known

--- The original's one history, from the history of every account (the
--- original kept one for all). Whole seconds, as its os.time() stamps; an
--- empty table (and why) when the history cannot be read, as the original
--- had none before its first sync.
---@return himalaya.sync.OriginalHistory history
---@return string? err
local function original_history()
  local all, err = manager.history()
  local out = {} ---@type himalaya.sync.OriginalHistory
  local last, failed = 0, 0
  for _, h in pairs(all or {}) do
    if h.last_sync and h.last_sync > last then
      last = h.last_sync
    end
    out.total_syncs_today = (out.total_syncs_today or 0) + h.syncs_today
    out.last_count_date = h.day
    local e = h.last_error
    if e and e.time > failed then
      failed = e.time
      out.last_error = e.message
      -- The history keeps the type of each account's last sync only.
      out.last_error_type = e.time == h.last_sync and h.last_type or nil
    end
  end
  out.last_full_sync = last > 0 and math.floor(last) or nil
  out.last_error_time = failed > 0 and math.floor(failed) or nil
  return out, err
end

--- How many callbacks of syncs or checks of this Neovim run, or have run
--- with what they scheduled still to run: a `complete_sync()` then is the
--- original's commands telling the end of that sync, which the manager has.
--- A count, as two syncs may end in one turn of the event loop.
local ending = 0

--- Calls `callback(...)` as the end of a sync of this Neovim (see `ending`).
---@param callback function
local function tell_end(callback, ...)
  ending = ending + 1
  local ok, err = pcall(callback, ...)
  vim.schedule(function()
    ending = ending - 1
  end)
  if not ok then
    error(err, 0)
  end
end

M.manager = legacy(manager, {
  cancel_sync = cancel_all,
  --- The original's start_sync() only marked a sync as begun; its commands
  --- then ran `mbsync.sync()`, which here is a sync of the manager, shown
  --- from its start. So this starts and marks nothing: a second, outside
  --- sync would show one sync twice.
  start_sync = function() end,
  --- While this Neovim syncs, progress is that sync's, which the manager
  --- has already: the original's commands passed on what `mbsync.sync()`
  --- reported. Called for each progress line, so only `_own_busy()` is
  --- asked. Other progress is a sync reported from outside, its new
  --- fields kept.
  ---@param progress any
  ---@return boolean ok
  ---@return string? err
  ---@return string? kind
  update_progress = function(progress)
    if type(progress) ~= 'table' then
      return manager.update_progress(progress)
    end
    if manager._own_busy() then
      return true
    end
    -- Only the fields the manager takes; the original's own (`status`,
    -- `messages_total`...) are left out.
    local p = {}
    for k in pairs(manager._progress_fields.set) do
      p[k] = progress[k]
    end
    return manager.update_progress(p)
  end,
  --- Ends a sync reported from outside; from the callback of `sync()` or
  --- the fast check, or what it scheduled (as the original's commands told
  --- the end of `mbsync.sync()`), nothing: the manager has ended that sync.
  ---@param sync_type string
  ---@param result? table
  ---@return boolean ok
  ---@return string? err
  ---@return string? kind
  complete_sync = function(sync_type, result)
    if ending > 0 then
      return true
    end
    return manager.complete_sync(sync_type, result)
  end,
  get_history = original_history,
  --- The new state, its progress with the original's fields as well, and
  --- a running sync always with a message: the original's sidebar shows a
  --- sync only with one (a sync reported from outside has none).
  get_sync_info = function()
    local info = manager.get_sync_info()
    info.progress = original_progress(info.progress, info)
    if info.status == 'running' and info.message == nil then
      info.message = 'syncing'
    end
    return info
  end,
  --- True while a sync of this Neovim runs.
  -- `cancel_sync()` stops only syncs of this Neovim.
  can_cancel_sync = manager._own_busy,
  --- Starts the auto-sync timer (`:help himalaya-sync-opt-auto_sync`).
  start_auto_sync = function()
    require('himalaya.sync.auto').start()
  end,
  stop_auto_sync = function()
    require('himalaya.sync.auto').stop()
  end,
  is_auto_sync_running = function()
    return require('himalaya.sync.auto').is_enabled()
  end,
})

--- What is wrong with the options of the original's `sync()` or fast
--- check, if anything: they must be a table, and its `callback` and
--- `on_progress` functions.
---@param opts any
---@param args string the callback's arguments, for the message
---@return string? err
local function bad_opts(opts, args)
  if opts ~= nil and type(opts) ~= 'table' then
    return ('invalid opts: expected a table like { callback = function(%s) end }'):format(args)
  end
  for _, k in ipairs({ 'callback', 'on_progress' }) do
    if opts and opts[k] ~= nil and not vim.is_callable(opts[k]) then
      return ('invalid opts.%s: expected a function'):format(k)
    end
  end
end

--- The original's sync: a full sync of `channel` (a channel, group or
--- account name; nil for the default). `opts.callback(success, err)` gets
--- the end, with the error's message; `opts.on_progress(progress)` the
--- progress. Returns the sync id, or false and why it did not start.
---@param channel? string
---@param opts? {callback?: fun(success: boolean, err?: string), on_progress?: fun(progress: himalaya.sync.OriginalProgress), auto_refresh?: boolean}
---@return integer|false id
---@return string? err
local function sync(channel, opts)
  local bad = bad_opts(opts, 'success, err')
  if bad then
    return false, bad
  end
  opts = opts or {}
  local callback = opts.callback
  -- auto_refresh: tokens are always refreshed before a sync that needs one.
  local id, err = manager.start_sync('full', {
    account = channel,
    on_progress = opts.on_progress and function(progress, info)
      opts.on_progress(original_progress(progress, info) --[[@as himalaya.sync.OriginalProgress]])
    end,
    on_complete = callback and function(result)
      local msg = result.error
      -- The original always gave a failure a message.
      if not result.success and (msg == nil or msg == '') then
        msg = 'sync ' .. (result.kind or 'failed')
      end
      tell_end(callback, result.success == true, msg)
    end,
  })
  return id or false, err
end

--- The original's fast check of one folder (default INBOX): here the
--- new-mail check (|himalaya-sync-check|). `opts.callback(status, err)`
--- gets `{has_new, new_count, remote_count, local_count}` (the server's
--- total, and that less the new ones), or nil and the error's message.
--- Returns the check's id, or false and why it did not start.
---@param opts? {account?: string, folder?: string, callback?: fun(status?: table, err?: string), auto_refresh?: boolean}
---@return integer|false id
---@return string? err
local function fast_check(opts)
  local bad = bad_opts(opts, 'status, err')
  if bad then
    return false, bad
  end
  opts = opts or {}
  local callback = opts.callback
  -- auto_refresh: a check refreshes an OAuth token first, as a sync does.
  local id, err = manager.start_sync('check', {
    account = opts.account,
    folders = { opts.folder or 'INBOX' },
    -- A caller with a callback shows the result itself, as the original's
    -- :HimalayaFastCheck did: no notification of ours besides.
    quiet = callback ~= nil,
    on_complete = callback and function(result)
      if not result.success then
        return tell_end(callback, nil, result.error or ('check ' .. (result.kind or 'failed')))
      end
      -- The folder of every IMAP account of a group (each has an INBOX).
      local new, total = 0, 0
      for _, f in ipairs(result.folders or {}) do
        new, total = new + f.new, total + f.total
      end
      tell_end(
        callback,
        { has_new = new > 0, new_count = new, remote_count = total, local_count = math.max(total - new, 0) }
      )
    end,
  })
  return id or false, err
end

M.mbsync = legacy(mbsync, {
  sync = sync,
  himalaya_fast_check = fast_check,
  --- Cancels the syncs of this Neovim: true when one was asked to stop.
  stop = cancel_all,
  cancel_current_sync = cancel_all,
  is_running = manager.is_busy,
  is_sync_running = manager.is_busy,
  --- Whether the mbsync program can be run.
  ---@return boolean
  check_mbsync = function()
    return vim.fn.executable(require('himalaya.sync.config').get().mbsync.cmd) == 1
  end,
  --- The new status plus the original's fields: `sync_running`, `status`
  --- ('idle' or the current sync's), `progress`, `external_sync_running`
  --- (another process syncs: it holds a sync lock), and `last_sync` and
  --- `last_error` (a message) of this Neovim's last sync, else from the
  --- history of the default account.
  get_status = function()
    local status = mbsync.get_status() --[[@as table<string, any>]]
    local current = status.current
    status.sync_running = status.running
    status.external_sync_running = false
    for _, l in ipairs(lock.list_locks()) do
      if l.held and not l.mine and vim.startswith(l.name, 'sync-') then
        status.external_sync_running = true
      end
    end
    status.status = status.running and current.status or 'idle'
    status.progress = status.running and original_progress(current.progress, current) or nil
    -- A UI may ask at every redraw: the history file is read only until
    -- this Neovim has finished a sync of its own.
    if current.end_time then
      status.last_sync = current.end_time
      status.last_error = current.error and current.error.message
      return status
    end
    local account = manager.default_account()
    local h = account and (manager.history() or {})[account]
    if h then
      status.last_sync = h.last_sync
      status.last_error = h.last_error and h.last_error.message
    end
    return status
  end,
})

M.lock = legacy(lock, {
  --- The original asked with a channel name, or nothing for "a sync runs";
  --- syncs take `sync-CHANNEL` locks here.
  ---@param name? string
  ---@return boolean
  is_locked = function(name)
    for _, l in ipairs(lock.list_locks()) do
      if
        l.held
        and (name == nil and vim.startswith(l.name, 'sync-') or l.name == name or l.name == 'sync-' .. tostring(name))
      then
        return true
      end
    end
    return false
  end,
  --- The names of the locks held now.
  ---@return string[]
  get_active_locks = function()
    return vim.tbl_map(function(l)
      return l.name
    end, lock.get_active_locks())
  end,
})

local oauth = require('himalaya.sync.oauth')

--- The original's OAuth functions served its one account; here an account
--- left out is the default one (|himalaya-sync-accounts|). With none, nil
--- goes on to the new function, which says what is missing.
---@param account? string
---@return string
local function account_or_default(account)
  return (account or manager.default_account()) --[[@as string]]
end

--- The original's callback, `callback(success, err)`; without one, a
--- failure is told to the user (the original logged it).
---@param callback? fun(success: boolean, err?: string)
---@param what string
---@return fun(ok: any, err?: string)
local function answer(callback, what)
  return function(ok, err)
    if callback then
      callback(ok ~= nil and ok ~= false, err)
    elseif not ok then
      vim.notify(('himalaya-sync: %s: %s'):format(what, err), vim.log.levels.ERROR)
    end
  end
end

--- How old a token state may be before a question asks the store again.
local STATUS_MAX_AGE_MS = 5000

---@class himalaya.sync.LegacyStatus
---@field status? himalaya.sync.OAuthStatus
---@field err? string
---@field asked integer when the store was last asked (`vim.uv.now()`)
---@field pending boolean

--- The token state of each account as last heard. The original's callers
--- ask at every redraw, and asking the store (a keyring, gpg, a command)
--- may take seconds: the answer is what was last heard, and the store is
--- asked again in the background when that is older than
--- STATUS_MAX_AGE_MS. Until it has answered once, there is no token.
---@type table<string, himalaya.sync.LegacyStatus>
local heard = {}

--- Kept under the name asked for ('' for the default account), so the
--- default is looked up (the mbsyncrc, himalaya's config) only with the store.
---@param account? string
---@return himalaya.sync.OAuthStatus? status
---@return string? err
local function status_of(account)
  local key = account or ''
  local entry = heard[key] --[[@as himalaya.sync.LegacyStatus?]]
  if not entry then
    entry = { asked = 0, pending = false }
    heard[key] = entry
  end
  if not entry.pending and vim.uv.now() - entry.asked >= STATUS_MAX_AGE_MS then
    entry.pending = true
    entry.asked = vim.uv.now()
    oauth.status(account_or_default(account), function(status, err)
      entry.status, entry.err, entry.pending = status, err, false
    end)
  end
  return entry.status, entry.err
end

--- A refresh changes the state: the next questions ask the store again
--- (under any name, the default's too).
local function forget()
  for _, entry in pairs(heard) do
    entry.asked = 0
  end
end

--- How many refreshes (and ensure_token calls) started through these
--- functions have not ended: the original's `refresh_in_progress`, one
--- flag for all accounts as it had.
local in_flight = 0

--- Counts a call as in flight until its callback: returns the callback
--- to pass on, which also forgets what was heard (the state changed).
---@param done fun(ok: any, err?: string)
---@return fun(ok: any, err?: string)
local function track(done)
  in_flight = in_flight + 1
  return function(ok, err)
    in_flight = in_flight - 1
    forget()
    done(ok, err)
  end
end

--- Why `v`, given as parameter `name`, is no function (`nil` allowed
--- unless `needed`): checked before anything starts, so that a bad one is
--- refused at once instead of failing in a callback later.
---@param v any
---@param name string
---@param needed? boolean
---@return string? err
local function bad_function(v, name, needed)
  if (v ~= nil or needed) and not vim.is_callable(v) then
    return ('invalid %s: expected a function, got %s'):format(name, native.shown(v))
  end
end

--- Refreshes the token now; `callback(success, err)` gets the end.
---@param account? string
---@param callback? fun(success: boolean, err?: string)
---@return false? refused
---@return string? err when refused
local function refresh(account, callback)
  local bad = bad_function(callback, 'callback')
  if bad then
    return false, bad
  end
  oauth.refresh_token(account_or_default(account), track(answer(callback, 'refreshing the OAuth2 token')))
end

--- The variables the original's `load_environment()` also sets in Neovim's
--- environment, where mbsync and refresh commands started later find them.
local OAUTH_VARS = { 'GMAIL_CLIENT_ID', 'GMAIL_CLIENT_SECRET', 'SASL_PATH', 'GOOGLE_APPLICATION_CREDENTIALS' }

--- The most `load_environment()` waits for systemctl without a callback.
local SYSTEMCTL_WAIT_MS = 2000

--- Reads `systemctl --user show-environment` output into a table and sets
--- the OAuth variables from it in Neovim's environment.
---@param out? vim.SystemCompleted
---@return table<string, string>
local function systemd_environment(out)
  local vars = {}
  if out and out.code == 0 then
    for line in (out.stdout or ''):gmatch('[^\n]+') do
      local k, v = line:match('^([^=]+)=(.+)$')
      if k then
        vars[k] = v
      end
    end
  end
  for _, k in ipairs(OAUTH_VARS) do
    if vars[k] then
      vim.env[k] = vars[k]
    end
  end
  return vars
end

M.oauth = legacy(oauth, {
  --- Whether a token is stored for the account (as last heard).
  ---@param account? string
  ---@return boolean
  has_token = function(account)
    local status = status_of(account)
    return status ~= nil and status.has_token
  end,
  --- Whether a stored access token has not expired (as last heard).
  ---@param account? string
  ---@return boolean
  is_valid = function(account)
    local status = status_of(account)
    return status ~= nil and status.has_token and (status.expires_in == nil or status.expires_in > 0)
  end,
  refresh = refresh,
  --- A valid token, refreshed first when it is about to expire;
  --- `callback(success, err)`.
  ---@param account? string
  ---@param callback? fun(success: boolean, err?: string)
  ensure_token = function(account, callback)
    local bad = bad_function(callback, 'callback')
    if bad then
      return false, bad
    end
    oauth.get_valid_token(account_or_default(account), track(answer(callback, 'getting a valid OAuth2 token')))
  end,
  --- Refreshes the token, then calls `fn` if that worked.
  ---@param fn function
  ---@param account? string
  refresh_and_retry = function(fn, account)
    local bad = bad_function(fn, 'fn', true)
    if bad then
      return false, bad
    end
    return refresh(account, function(ok, err)
      if ok then
        fn()
      else
        vim.notify('himalaya-sync: refreshing the OAuth2 token: ' .. tostring(err), vim.log.levels.ERROR)
      end
    end)
  end,
  --- The new status (|himalaya.sync.oauth.status()|, as last heard) with
  --- the original's `last_refresh` of 0 when this Neovim has not
  --- refreshed and its `refresh_in_progress`; `has_token` false and
  --- `error` when there is none to tell.
  ---@param account? string
  ---@return table
  get_status = function(account)
    local status, err = status_of(account)
    local got = vim.deepcopy(status or { has_token = false, error = err }) --[[@as table<string, any>]]
    got.last_refresh = got.last_refresh or 0
    got.refresh_in_progress = in_flight > 0
    -- The original's health check asks for it: whether its OAuth client
    -- variable is in Neovim's environment (see load_environment()).
    got.environment_loaded = vim.env.GMAIL_CLIENT_ID ~= nil
    return got
  end,
  --- The original loaded its environment here; nothing needs setting up.
  setup = function() end,
  --- The original's, for NixOS: the systemd user environment as a table
  --- (`{}` without systemd), whose OAuth variables are also set in
  --- Neovim's environment. With `callback(vars)` it does not wait; without,
  --- it waits for systemctl (at most SYSTEMCTL_WAIT_MS), as the original did.
  ---@param callback? fun(vars: table<string, string>)
  ---@return table<string, string>? vars without a callback
  ---@return string? err a callback that is no function
  load_environment = function(callback)
    local bad = bad_function(callback, 'callback')
    if bad then
      return nil, bad
    end
    local cmd = { 'systemctl', '--user', 'show-environment' }
    local started, proc = pcall(vim.system, cmd, { text = true }, callback and function(out)
      vim.schedule(function()
        callback(systemd_environment(out))
      end)
    end)
    if not started then
      -- No systemctl: no systemd environment.
      if callback then
        vim.schedule(function()
          callback({})
        end)
        return
      end
      return {}
    end
    if callback then
      return
    end
    local out = proc:wait(SYSTEMCTL_WAIT_MS)
    return systemd_environment(out)
  end,
})

return M
