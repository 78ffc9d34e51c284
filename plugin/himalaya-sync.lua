-- Entry points only: nothing here loads the Rust library, and other
-- modules load only when auto-sync, IDLE or the legacy commands are
-- configured.
if vim.g.loaded_himalaya_sync then
  return
end
vim.g.loaded_himalaya_sync = true

vim.api.nvim_create_user_command('HimalayaSync', function(opts)
  require('himalaya.sync.commands').run(opts)
end, {
  nargs = '*',
  desc = 'himalaya-sync: sync mail, show status and locks',
  complete = function(arglead, cmdline)
    return require('himalaya.sync.commands').complete(arglead, cmdline)
  end,
})

-- <Plug> mappings to bind as you like; no default keys. (The API call
-- avoids loading vim.keymap at startup.)
local map, opts = vim.api.nvim_set_keymap, { noremap = true }
map('n', '<Plug>(HimalayaSyncFull)', '<Cmd>HimalayaSync full<CR>', opts)
map('n', '<Plug>(HimalayaSyncInbox)', '<Cmd>HimalayaSync inbox<CR>', opts)
map('n', '<Plug>(HimalayaSyncCancel)', '<Cmd>HimalayaSync cancel<CR>', opts)

-- Only a vim.g.himalaya_sync that asks for one of them loads any module;
-- the merged configuration then decides, so that a setup() called earlier
-- (from init.lua) can still turn them off.
local g = vim.g.himalaya_sync
-- Vimscript writes false as 0, which Lua takes as true. Anything else but
-- false counts, so that a bad value is reported now, not at the first use.
local function on(v)
  return v ~= nil and v ~= false and v ~= 0
end
local function wants(key)
  return type(g[key]) == 'table' and on(g[key].enabled)
end
if type(g) == 'table' and (on(g.legacy_commands) or wants('auto_sync') or wants('idle')) then
  local ok, cfg = pcall(require('himalaya.sync.config').get)
  if ok then
    require('himalaya.sync')._start_enabled(cfg)
  else
    require('himalaya.sync.native').notify(cfg, vim.log.levels.ERROR)
  end
end
