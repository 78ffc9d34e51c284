--- mbsync syncs (`require('himalaya.sync.mbsync')`). Every sync goes through
--- the manager, so `manager.get_sync_info()` always tells the truth.
local manager = require('himalaya.sync.manager')
local native = require('himalaya.sync.native')
local config = require('himalaya.sync.config')

local M = {}

---@class himalaya.sync.SyncCallbacks
---@field on_progress? fun(progress: himalaya.sync.Progress, info: himalaya.sync.SyncInfo)
---@field on_complete? fun(result: himalaya.sync.Result, info: himalaya.sync.SyncInfo)
---@field wait? number seconds to wait when another process syncs the account

local OPTIONS = native.known_keys({ 'on_progress', 'on_complete', 'wait' })

--- Starts a sync through the manager. An error about an argument must name
--- it as the caller gave it (`account`), not as the manager's option it
--- becomes (`options.account`): the arguments are checked here first.
---@param type himalaya.sync.SyncType
---@param account any
---@param folders? string[] checked by the caller
---@param opts any
---@return integer? id
---@return string? err
---@return string? kind
local function start(type, account, folders, opts)
  local bad = manager._bad_account(account, 'account')
  if bad then
    return nil, bad, 'invalid'
  end
  if opts ~= nil and _G.type(opts) ~= 'table' then
    return nil, 'invalid options: expected a table', 'invalid'
  end
  opts = opts or {}
  local unknown = native.unknown_key(opts, OPTIONS, 'options', 'option')
  if unknown then
    return nil, unknown, 'invalid'
  end
  return manager.start_sync(type, {
    account = account,
    folders = folders,
    wait = opts.wait,
    on_progress = opts.on_progress,
    on_complete = opts.on_complete,
  })
end

--- Syncs the account's inbox. Returns the sync id, or `nil, err, kind`.
---@param account? string
---@param opts? himalaya.sync.SyncCallbacks
---@return integer? id
---@return string? err
---@return string? kind
function M.sync_inbox(account, opts)
  return start('inbox', account, nil, opts)
end

--- Syncs every folder of the account.
---@param account? string
---@param opts? himalaya.sync.SyncCallbacks
---@return integer? id
---@return string? err
---@return string? kind
function M.sync_full(account, opts)
  return start('full', account, nil, opts)
end

--- Syncs only the given folders (mbsync `channel:box,box`).
---@param account string
---@param folders string[]
---@param opts? himalaya.sync.SyncCallbacks
---@return integer? id
---@return string? err
---@return string? kind
function M.sync_folders(account, folders, opts)
  local bad = manager._bad_folders(folders, 'folders')
  if bad then
    return nil, bad, 'invalid'
  end
  return start('folders', account, folders, opts)
end

--- Repairs a folder whose UIDVALIDITY changed on the server, without loss:
--- the local folder is moved to a backup, synced fresh, and messages the
--- server lacks are copied back and uploaded. The backup is kept.
---@param account string
---@param folder string
---@param opts? himalaya.sync.SyncCallbacks
---@return integer? id
---@return string? err
---@return string? kind
function M.repair_folder(account, folder, opts)
  if _G.type(folder) ~= 'string' or not config.is_utf8(folder) then
    return nil, ('invalid folder %s: expected a folder name (UTF-8 text)'):format(native.shown(folder)), 'invalid'
  end
  return start('repair', account, { folder }, opts)
end

--- Cancels one sync by id, or every sync of this Neovim.
---@param id? integer
---@return integer cancelled how many syncs were asked to stop
---@return string? err why `id` was refused
function M.cancel_sync(id)
  return manager.cancel_sync(id)
end

--- Whether syncs run, and their details.
---@return {running: boolean, syncs: himalaya.sync.SyncInfo[], current: himalaya.sync.SyncInfo}
function M.get_status()
  local info = manager.get_sync_info()
  return { running = manager.is_busy(), syncs = info.syncs, current = info }
end

--- Parses one line of mbsync's progress output (1.3, 1.4 or 1.5 format);
--- nil when it is not a progress line.
---@param line string
---@return himalaya.sync.Progress?
function M.parse_progress_line(line)
  if type(line) ~= 'string' then
    return nil
  end
  local lib = native.get()
  if not lib then
    return nil
  end
  return (lib.parse_progress_line(line))
end

--- Every Channel and Group in the mbsyncrc.
---@return himalaya.sync.Target[]? targets
---@return string? err
function M.list_targets()
  return manager.list_targets()
end

return M
