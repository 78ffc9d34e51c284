--- `:checkhealth himalaya.sync`
local M = {}

local health = vim.health

function M.check()
  health.start('himalaya-sync: configuration')
  local ok, cfg = pcall(require('himalaya.sync.config').get)
  if ok then
    health.ok('configuration is valid')
  else
    health.error(tostring(cfg))
    cfg = require('himalaya.sync.config').defaults
  end

  health.start('himalaya-sync: native library')
  local native = require('himalaya.sync.native')
  local loc, ferr = native.find()
  if not loc then
    health.error(ferr or 'library not found', { native.build_hint() })
  else
    local lib, lerr = native.get()
    if lib then
      health.ok(('library %s (build %s) loaded from %s (%s)'):format(lib.version, lib.build_id, loc.path, loc.kind))
    else
      health.error(lerr or 'cannot load the library', { native.build_hint() })
    end
  end

  health.start('himalaya-sync: mbsync')
  local cmd = cfg.mbsync.cmd
  if vim.fn.executable(cmd) == 1 then
    local res = vim.system({ cmd, '--version' }, { text = true }):wait(5000)
    local version = vim.trim((res.stdout or '') .. (res.stderr or ''))
    health.ok(('%s found: %s'):format(vim.fn.exepath(cmd), version ~= '' and version or 'version unknown'))
  else
    health.error(('%s not found on PATH'):format(cmd), {
      'install isync (Debian/Ubuntu: apt install isync; macOS: brew install isync)',
      'or set mbsync.cmd in your configuration',
    })
  end

  health.start('himalaya-sync: himalaya')
  local himalaya = require('himalaya.sync.himalaya')
  local cli = himalaya.cli_version()
  if cli then
    health.ok(('%s found: %s'):format(vim.fn.exepath('himalaya'), cli))
  else
    health.info('himalaya CLI not found on PATH (optional)')
  end
  if native.is_loaded() then
    local accounts, herr, file = himalaya.accounts()
    if herr then
      health.warn(herr)
    elseif not accounts then
      health.info('no himalaya configuration found')
    else
      health.ok(('himalaya configuration %s: %d account(s)'):format(file, #accounts))
      for _, a in ipairs(accounts) do
        if a.backend ~= 'maildir' then
          health.info(('account %s uses the %s backend: nothing to sync'):format(a.name, a.backend))
        elseif a.mismatch then
          health.warn(('account %s: %s'):format(a.name, a.mismatch))
        elseif a.target then
          health.ok(('account %s%s is synced by %s'):format(a.name, a.default and ' (default)' or '', a.target))
        else
          health.warn(
            ('account %s is synced by several channels (%s) and no group of exactly them'):format(
              a.name,
              table.concat(a.channels, ', ')
            )
          )
        end
      end
    end
  end

  health.start('himalaya-sync: locks')
  if native.is_loaded() then
    local dir, derr = require('himalaya.sync.lock').lock_dir()
    if dir then
      health.ok(('lock folder %s is owned by you and private (0700)'):format(dir))
    else
      health.error(derr)
    end
  else
    health.info('skipped: the library is not loaded')
  end
end

return M
