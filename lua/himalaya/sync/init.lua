--- himalaya-sync.nvim: the email-sync layer for Himalaya and mbsync.
---
--- `setup()` is optional: with no configuration the plugin reads the user's
--- mbsyncrc. Modules: `himalaya.sync.manager`, `.mbsync`, `.oauth`, `.lock`.
local M = {}

M.version = require('himalaya.sync.version')

--- Starts what `cfg` enables: the legacy commands, auto-sync and push
--- (IMAP IDLE: one watching Neovim, elected by a named lock). Used by
--- setup() and by the plugin file for |g:himalaya_sync|.
---@param cfg himalaya.sync.Config
function M._start_enabled(cfg)
  -- Removed only when the option made them: commands made by a call of
  -- legacy_commands() stay.
  ---@type {legacy_by_option: boolean}
  local S = require('himalaya.sync.native').state('init', { legacy_by_option = false })
  if cfg.legacy_commands then
    M.legacy_commands()
  elseif S.legacy_by_option then
    M.legacy_commands(false)
  end
  S.legacy_by_option = cfg.legacy_commands
  if cfg.auto_sync.enabled then
    require('himalaya.sync.auto').start()
  end
  if cfg.idle.enabled then
    require('himalaya.sync.idle').start()
  end
end

--- What the plugin file runs when |g:himalaya_sync| turns on one of them:
--- starts them from the merged configuration, or reports why it is bad.
function M._start_from_plugin()
  local ok, cfg = pcall(require('himalaya.sync.config').get)
  if ok then
    M._start_enabled(cfg)
  else
    require('himalaya.sync.native').notify(cfg, vim.log.levels.ERROR)
  end
end

--- Applies options (same table as `vim.g.himalaya_sync`); raises an error
--- naming the bad field when a value is invalid. Starts auto-sync, IDLE and
--- the legacy commands when they are enabled (restarted, so that a new
--- interval applies).
---@param opts? himalaya.sync.Config|table
function M.setup(opts)
  local config = require('himalaya.sync.config')
  config.setup(opts)
  -- Raises here, before anything is stopped, when g:himalaya_sync (merged
  -- with these options) is invalid.
  local cfg = config.get()
  -- A lock folder in use cannot change: said now, when it is asked for.
  local native = require('himalaya.sync.native')
  if native.is_loaded() and package.loaded['himalaya.sync.lock'] then
    require('himalaya.sync.lock')._check_moved(assert(native.get()), config.get())
  end
  -- The engine takes the new settings now, not at the next sync: a raised
  -- max_parallel starts syncs waiting in the queue.
  if native.is_loaded() and package.loaded['himalaya.sync.manager'] then
    require('himalaya.sync.manager')._ready()
  end
  require('himalaya.sync.auto').stop()
  require('himalaya.sync.idle').stop()
  M._start_enabled(cfg)
end

--- Status line text: empty when idle, else e.g. `sync demo 42%`. Cheap
--- enough for every redraw (no library call, no allocation while idle).
---@return string
function M.statusline()
  local manager = package.loaded['himalaya.sync.manager']
  if not manager and debug.getregistry()['himalaya_sync.native'] then
    -- Used before (native.lua's registry state exists), then unloaded by
    -- a plugin reloader: the manager's state is kept, so load it again.
    manager = require('himalaya.sync.manager')
  end
  return manager and manager.statusline() or ''
end

--- A lualine component: `sections = { lualine_x = { require('himalaya.sync').lualine } }`.
M.lualine = {
  M.statusline,
  cond = function()
    return M.statusline() ~= ''
  end,
}

--- The original plugin's commands and the `:HimalayaSync` subcommand each
--- one stands for.
local LEGACY = {
  HimalayaSyncInbox = 'inbox',
  HimalayaSyncFull = 'full',
  HimalayaCancelSync = 'cancel',
  HimalayaSyncStatus = 'status',
  HimalayaSyncInfo = 'info',
  HimalayaAutoSyncToggle = 'auto toggle',
  HimalayaOAuthRefresh = 'oauth refresh',
  HimalayaCleanup = 'cleanup',
}

--- The original plugin's commands, as thin aliases of `:HimalayaSync` that
--- complete as it does; `false` removes them again (not commands of those
--- names made by another plugin).
---@param on? boolean default true
function M.legacy_commands(on)
  local existing = vim.api.nvim_get_commands({})
  for name, sub in pairs(LEGACY) do
    local desc = 'himalaya-sync: :HimalayaSync ' .. sub
    if on == false then
      -- Only ours: a command of that name from the original plugin stays.
      if existing[name] and existing[name].definition == desc then
        vim.api.nvim_del_user_command(name)
      end
    else
      vim.api.nvim_create_user_command(name, function(o)
        -- The split arguments as they are: a folder's `|`, unescaped by
        -- now, must not end a :HimalayaSync line.
        require('himalaya.sync.commands').run({ fargs = vim.list_extend(vim.split(sub, ' '), o.fargs) })
      end, {
        nargs = '*',
        bar = true,
        desc = desc,
        complete = function(arglead, cmdline)
          -- What follows this command's name, after any modifier
          -- (`:silent`, a count) or abbreviation of it.
          local args = cmdline:match('Himalaya%w*!?(.*)$') or ''
          return require('himalaya.sync.commands').complete(arglead, 'HimalayaSync ' .. sub .. args)
        end,
      })
    end
  end
end

return M
