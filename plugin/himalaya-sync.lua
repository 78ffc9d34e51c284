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

local g = vim.g.himalaya_sync
if type(g) == 'table' then
  if g.legacy_commands then
    require('himalaya.sync').legacy_commands()
  end
  if type(g.auto_sync) == 'table' and g.auto_sync.enabled then
    require('himalaya.sync.auto').start()
  end
  if type(g.idle) == 'table' and g.idle.enabled then
    require('himalaya.sync.idle').start()
  end
end
