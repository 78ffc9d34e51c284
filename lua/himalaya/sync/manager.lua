--- The sync manager (`require('himalaya.sync.manager')`): one coordinator for
--- every sync. Syncs run in the Rust engine; this module mirrors their state
--- from engine events, runs the caller's callbacks, and notifies the user.
---
--- `get_sync_info()` never loads the library and never blocks, so it is safe
--- in a statusline.
local native = require('himalaya.sync.native')
local config = require('himalaya.sync.config')

local M = {}

---@alias himalaya.sync.SyncType 'full'|'inbox'|'folders'
---@alias himalaya.sync.Status 'idle'|'running'|'completed'|'error'|'cancelled'

---@class himalaya.sync.Progress
---@field channels {done: integer, total: integer}
---@field boxes {done: integer, total: integer}
---@field far {new: {done: integer, total: integer}, flags: {done: integer, total: integer}, trash: {done: integer, total: integer}}
---@field near {new: {done: integer, total: integer}, flags: {done: integer, total: integer}, trash: {done: integer, total: integer}}
---@field percent? number 0-100, only moves forward
---@field box? string the folder mbsync is working on

---@class himalaya.sync.Result
---@field success boolean
---@field error? string one line for the user
---@field kind? string auth|network|timeout|locked|uidvalidity|config|cancelled|unknown|invalid
---@field duration number seconds
---@field pulled integer messages copied to the local side
---@field pushed integer messages copied to the server
---@field flags_changed integer
---@field trashed integer

---@class himalaya.sync.SyncInfo
---@field id? integer
---@field type? himalaya.sync.SyncType
---@field status himalaya.sync.Status
---@field progress? himalaya.sync.Progress
---@field account? string
---@field channel? string mbsync targets
---@field start_time? number unix seconds
---@field end_time? number unix seconds
---@field message? string
---@field error? {kind: string, message: string, line: string}
---@field result? himalaya.sync.Result
---@field syncs? himalaya.sync.SyncInfo[] every sync of this Neovim, oldest first

---@class himalaya.sync.StartOptions
---@field account? string channel or group name (default: the only one in mbsyncrc)
---@field folders? string[] for type 'folders'
---@field wait? number seconds to wait when another process syncs the account (default 0)
---@field on_progress? fun(progress: himalaya.sync.Progress, info: himalaya.sync.SyncInfo)
---@field on_complete? fun(result: himalaya.sync.Result, info: himalaya.sync.SyncInfo)

---@type table<integer, himalaya.sync.SyncInfo>
local syncs = {}
---@type integer[] sync ids, oldest first
local order = {}
---@type table<integer, himalaya.sync.StartOptions>
local callbacks = {}
local subscribed = false
local configured_with, configured_lib

local KEEP = 20
local SYNC_TYPES = { full = true, inbox = true, folders = true }

local function remember(info)
  if not syncs[info.id] then
    order[#order + 1] = info.id
    if #order > KEEP then
      local old = table.remove(order, 1)
      syncs[old] = nil
    end
  end
  syncs[info.id] = info
end

local function notify(msg, level)
  if config.get().notify then
    vim.notify('himalaya-sync: ' .. msg, level)
  end
end

local function call(fn, ...)
  if fn then
    local ok, err = pcall(fn, ...)
    if not ok then
      vim.notify('himalaya-sync: error in sync callback: ' .. tostring(err), vim.log.levels.ERROR)
    end
  end
end

local function on_event(ev)
  local info = ev.data
  remember(info)
  local cb = callbacks[info.id] or {}
  if ev.name == 'sync_progress' and info.progress then
    call(cb.on_progress, info.progress, info)
  elseif ev.name == 'sync_done' then
    callbacks[info.id] = nil
    call(cb.on_complete, info.result, info)
    if info.status == 'completed' then
      notify(info.message, vim.log.levels.INFO)
    elseif info.status == 'cancelled' then
      notify(info.message, vim.log.levels.WARN)
    else
      notify(info.message, vim.log.levels.ERROR)
    end
  end
  M.notify_ui_update()
end

--- The library, subscribed and configured for the current settings.
---@return table? lib
---@return string? err
local function ready()
  local lib, err = native.get()
  if not lib then
    return nil, err
  end
  if not subscribed then
    subscribed = true
    for _, name in ipairs({ 'sync_started', 'sync_progress', 'sync_done' }) do
      native.on(name, on_event)
    end
  end
  local ok, cfg = pcall(config.get)
  if not ok then
    return nil, cfg
  end
  local settings = vim.tbl_extend('force', cfg.mbsync, { accounts = cfg.accounts })
  if settings.config then
    settings.config = vim.fn.expand(settings.config)
  end
  -- A rebuilt library loaded by :HimalayaSync build starts unconfigured.
  if lib ~= configured_lib or not vim.deep_equal(settings, configured_with) then
    local done, e = lib.manager_configure(settings)
    if not done then
      return nil, e.message
    end
    configured_with, configured_lib = settings, lib
  end
  return lib
end
M._ready = ready

--- Every channel and group in the mbsyncrc (each is an account name).
---@return {name: string, kind: 'channel'|'group'}[]? targets
---@return string? err
function M.list_targets()
  local lib, err = ready()
  if not lib then
    return nil, err
  end
  local list, e = lib.mbsync_targets()
  if not list then
    return nil, e.message
  end
  return list
end

--- The account to use when none is given: the only target in mbsyncrc.
---@return string? account
---@return string? err
function M.default_account()
  local targets, err = M.list_targets()
  if not targets then
    return nil, err
  end
  if #targets == 1 then
    return targets[1].name
  end
  local names = vim.tbl_map(function(t)
    return t.name
  end, targets)
  return nil,
    #names == 0 and 'no Channel or Group in the mbsyncrc'
      or ('which account? one of: %s'):format(table.concat(names, ', '))
end

--- Starts a sync; returns its id, or `nil, err, kind`. Never blocks: the
--- callbacks run on the main loop as the sync progresses and ends.
---@param type himalaya.sync.SyncType
---@param options? himalaya.sync.StartOptions
---@return integer? id
---@return string? err
---@return string? kind
function M.start_sync(type, options)
  if not SYNC_TYPES[type] then
    return nil, ('unknown sync type %s: expected "full", "inbox" or "folders"'):format(vim.inspect(type)), 'invalid'
  end
  options = options or {}
  if _G.type(options) ~= 'table' then
    return nil, 'invalid options: expected a table', 'invalid'
  end
  for _, k in ipairs({ 'on_progress', 'on_complete' }) do
    if options[k] ~= nil and not vim.is_callable(options[k]) then
      return nil, ('invalid options.%s: expected a function'):format(k), 'invalid'
    end
  end
  if options.account ~= nil and _G.type(options.account) ~= 'string' then
    return nil, ('invalid options.account: expected a string, got %s'):format(vim.inspect(options.account)), 'invalid'
  end
  if options.folders ~= nil then
    if _G.type(options.folders) ~= 'table' or vim.iter(options.folders):any(function(f)
      return _G.type(f) ~= 'string'
    end) then
      return nil, 'invalid options.folders: expected a list of folder names', 'invalid'
    end
  end
  if options.wait ~= nil and (_G.type(options.wait) ~= 'number' or options.wait < 0) then
    return nil, ('invalid options.wait: expected seconds >= 0, got %s'):format(vim.inspect(options.wait)), 'invalid'
  end
  local lib, err = ready()
  if not lib then
    return nil, err, 'config'
  end
  local account = options.account
  if not account then
    local a, aerr = M.default_account()
    if not a then
      return nil, aerr, 'config'
    end
    account = a
  end
  local id, e = lib.sync_start(type, account, options.folders, options.wait or 0)
  if not id then
    return nil, e.message, e.kind
  end
  callbacks[id] = { on_progress = options.on_progress, on_complete = options.on_complete }
  notify(('%s sync of %s started'):format(type, account), vim.log.levels.INFO)
  return id
end

--- Cancels one sync by id, or every sync of this Neovim. Returns how many
--- were asked to stop.
---@param id? integer
---@return integer
function M.cancel_sync(id)
  if not native.is_loaded() then
    return 0
  end
  local lib = native.get()
  return lib.sync_cancel(id) or 0
end

--- True while a sync of this Neovim runs.
---@return boolean
function M.is_busy()
  for _, info in pairs(syncs) do
    if info.status == 'running' then
      return true
    end
  end
  return false
end

--- The state of syncing: the current (or last) sync's fields, plus `syncs`,
--- every sync of this Neovim.
---@return himalaya.sync.SyncInfo
function M.get_sync_info()
  local list, primary = {}, nil
  for _, id in ipairs(order) do
    local info = syncs[id]
    list[#list + 1] = vim.deepcopy(info)
    if info.status == 'running' or not (primary and primary.status == 'running') then
      primary = info
    end
  end
  local out = primary and vim.deepcopy(primary) or { status = 'idle' }
  out.syncs = list
  return out
end

--- Reports progress of a sync run outside the engine (other code can feed
--- the manager, as in the original plugin).
---@param progress table
function M.update_progress(progress)
  local info = syncs[0] or { id = 0, status = 'running', type = 'external', start_time = os.time() }
  info.status = 'running'
  info.progress = progress
  remember(info)
  M.notify_ui_update()
end

--- Marks the externally reported sync as finished.
---@param type string
---@param result himalaya.sync.Result|table
function M.complete_sync(type, result)
  local info = syncs[0] or { id = 0, start_time = os.time() }
  info.type = type
  info.end_time = os.time()
  info.result = result
  info.status = (result and result.success) and 'completed' or 'error'
  info.message = result and result.error or nil
  remember(info)
  M.notify_ui_update()
end

--- Tells the UI that sync state changed: fires `User HimalayaSyncUpdate`
--- with the info as data and redraws status lines.
function M.notify_ui_update()
  vim.api.nvim_exec_autocmds('User', {
    pattern = 'HimalayaSyncUpdate',
    modeline = false,
    data = M.get_sync_info(),
  })
  vim.cmd.redrawstatus({ bang = true })
end

return M
