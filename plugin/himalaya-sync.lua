-- Entry points only: nothing here loads the Rust library or other modules.
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
