--- himalaya-sync.nvim: the email-sync layer for Himalaya and mbsync.
---
--- `setup()` is optional: with no configuration the plugin reads the user's
--- mbsyncrc. Modules: `himalaya.sync.manager`, `.mbsync`, `.oauth`, `.lock`.
local M = {}

--- Applies options (same table as `vim.g.himalaya_sync`); raises an error
--- naming the bad field when a value is invalid.
---@param opts? table
function M.setup(opts)
  require('himalaya.sync.config').setup(opts)
end

M.version = require('himalaya.sync.version')

return M
