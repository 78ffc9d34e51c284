--- The himalaya CLI's accounts (`require('himalaya.sync.himalaya')`).
---
--- Reads himalaya's config.toml (`$HIMALAYA_CONFIG`, else
--- `$XDG_CONFIG_HOME/himalaya/config.toml`, `~/.config/himalaya/config.toml`,
--- `~/.himalayarc`) and matches each Maildir account with the mbsync
--- channels that sync into its root, so a himalaya account name works
--- wherever an mbsync channel or group name does, and a command without an
--- account syncs himalaya's default account.
local M = {}

--- What the library reads from himalaya's configuration.
---@class himalaya.sync.HimalayaConfig
---@field config string the (base) configuration file read
---@field accounts {name: string, default: boolean, email?: string, display_name?: string, maildir?: string, backend: string}[] sorted by name
---@field matches {himalaya: string, channels: string[], group?: string, mismatch?: string}[] one per account, same order

---@class himalaya.sync.HimalayaAccount
---@field name string
---@field default boolean
---@field email? string
---@field maildir? string the Maildir root
---@field backend string
---@field channels string[] mbsync channels filling the Maildir
---@field group? string a group of exactly those channels
---@field mismatch? string why no channel matched
---@field target? string the mbsync channel or group that syncs the account

--- himalaya's accounts with their mbsync side, or nil when himalaya has no
--- configuration (then `err` is nil too).
---@return himalaya.sync.HimalayaAccount[]? accounts
---@return string? err
---@return string? config the file read
function M.accounts()
  local lib, err = require('himalaya.sync.manager')._ready()
  if not lib then
    return nil, err
  end
  local h, e = lib.himalaya_accounts()
  if e then
    return nil, e.message
  end
  if not h then
    return nil
  end
  local out = {}
  for i, a in ipairs(h.accounts) do
    local m = h.matches[i] or {}
    local target = m.group or (#(m.channels or {}) == 1 and m.channels[1]) or nil
    out[#out + 1] = vim.tbl_extend('force', a, {
      channels = m.channels or {},
      group = m.group,
      mismatch = m.mismatch,
      target = target,
    })
  end
  return out, nil, h.config
end

--- The mbsync target of himalaya's default account, if it has one.
---@return string? target
---@return string? err why there is none (nil when himalaya is not configured)
function M.default_target()
  local accounts, err = M.accounts()
  if not accounts then
    return nil, err
  end
  for _, a in ipairs(accounts) do
    if a.default then
      if a.target then
        return a.target
      end
      return nil,
        a.mismatch or ('himalaya account %s is synced by several channels (%s) and no group of exactly them'):format(
          a.name,
          table.concat(a.channels, ', ')
        )
    end
  end
  return nil
end

--- The mbsync target for a himalaya account name, if `name` is one.
---@param name string
---@return string?
function M.target_of(name)
  for _, a in ipairs(M.accounts() or {}) do
    if a.name == name then
      return a.target
    end
  end
  return nil
end

--- Names for completion: himalaya's accounts that map to mbsync.
---@return string[]
function M.names()
  local names = {}
  for _, a in ipairs(M.accounts() or {}) do
    if a.target then
      names[#names + 1] = a.name
    end
  end
  return names
end

--- The installed himalaya CLI's version line, or nil when it is not on PATH.
---@return string?
function M.cli_version()
  if vim.fn.executable('himalaya') ~= 1 then
    return nil
  end
  local res = vim.system({ 'himalaya', '--version' }, { text = true }):wait(5000)
  local line = vim.split(vim.trim((res.stdout or '') .. (res.stderr or '')), '\n')[1]
  return line ~= '' and line or 'version unknown'
end

return M
