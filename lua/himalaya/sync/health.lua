--- `:checkhealth himalaya.sync`
local M = {}

local health = vim.health

function M.check()
  health.start('himalaya-sync: configuration')
  local ok, cfg = pcall(require('himalaya.sync.config').get)
  if ok then
    health.ok('configuration is valid')
  else
    -- The section names the plugin already.
    health.error(require('himalaya.sync.native').bare(cfg))
    cfg = require('himalaya.sync.config').defaults
  end

  -- The engine reads the mbsyncrc and himalaya's configuration only once
  -- the configuration is valid and the lock folder usable. Each of those is
  -- reported in its own section; the sections that depend on them say they
  -- were skipped, rather than repeating the error with the wrong advice.
  local function blocked()
    if not ok then
      return 'the configuration is invalid (see above)'
    elseif not require('himalaya.sync.lock').lock_dir() then
      return 'the lock folder cannot be used (see locks below)'
    end
  end

  health.start('himalaya-sync: native library')
  local native = require('himalaya.sync.native')
  local loc, ferr = native.find()
  if not loc then
    health.error(
      ferr and native.bare(ferr) or 'library not found',
      { native.build_hint(os.getenv('HIMALAYA_SYNC_LIB') and 'env' or nil) }
    )
  else
    local lib, lerr = native.get()
    if lib then
      health.ok(('library %s (build %s) loaded from %s (%s)'):format(lib.version, lib.build_id, loc.path, loc.kind))
    else
      -- The message carries its own fix: a build hint for a library that
      -- does not load, what to remove for a staging folder that is refused.
      -- Said in the plugin's own report: without "himalaya-sync: ".
      health.error(lerr and native.bare(lerr) or 'cannot load the library')
    end
  end

  health.start('himalaya-sync: command-line tool')
  local tool = native.tool_path()
  local throttled = vim.tbl_filter(function(name)
    return cfg.accounts[name].throttle ~= nil
  end, vim.tbl_keys(cfg.accounts))
  table.sort(throttled)
  local own = native.own_tool_path()
  if tool then
    -- The relay is run with arguments of this version: another version on
    -- PATH may not understand them.
    local res = vim.system({ tool, 'version' }, { text = true }):wait(5000)
    local version = (res.stdout or ''):match('^himalaya%-sync (%S+)')
    if version == native.expected_version then
      health.ok(('%s, version %s: the relay of throttled accounts'):format(tool, version))
    else
      health.warn(
        ('%s is version %s, not %s: throttled accounts may fail'):format(
          tool,
          version or 'unknown',
          native.expected_version
        ),
        { native.build_hint(loc and loc.kind) }
      )
    end
  else
    local report = #throttled > 0 and health.error or health.info
    report(
      ('himalaya-sync not found (not at %s, not on PATH)%s'):format(
        own or 'the library',
        #throttled > 0 and ('; throttled accounts (%s) cannot sync'):format(table.concat(throttled, ', '))
          or ': needed only to throttle an account, and by an OAuth2 PassCmd that names it'
      ),
      { native.build_hint(loc and loc.kind) }
    )
  end

  health.start('himalaya-sync: mbsync')
  local cmd = cfg.mbsync.cmd
  if vim.fn.executable(cmd) == 1 then
    local res = vim.system({ cmd, '--version' }, { text = true }):wait(5000)
    local version = vim.trim((res.stdout or '') .. (res.stderr or ''))
    health.ok(('%s found: %s'):format(vim.fn.exepath(cmd), version ~= '' and version or 'version unknown'))
    -- isync 1.3 reads at most 79 characters of a PassCmd's output.
    local minor = version:match('^isync 1%.(%d+)')
    local oauth_accounts = require('himalaya.sync.oauth').accounts()
    if minor and tonumber(minor) < 4 and #oauth_accounts > 0 then
      health.error(
        ('%s cuts an OAuth2 token: it passes at most 79 characters of the PassCmd output, so %s cannot log in'):format(
          version,
          table.concat(oauth_accounts, ', ')
        ),
        { 'install isync 1.4 or later (Debian 12, Ubuntu 22.04 and later have it)' }
      )
    end
  else
    -- A name is looked up on PATH; a path (absolute or with a slash) is not.
    local where = cmd:find('/', 1, true) and 'not found or not executable' or 'not found on PATH'
    health.error(('%s %s'):format(cmd, where), {
      'install isync (Debian/Ubuntu: apt install isync; macOS: brew install isync)',
      'or set mbsync.cmd in your configuration',
    })
  end
  -- Once, for every section below that needs the engine configured.
  local engine_blocked = native.is_loaded() and blocked()
  if engine_blocked then
    health.info('the mbsyncrc was not read: ' .. engine_blocked)
  elseif native.is_loaded() then
    local targets, terr = require('himalaya.sync.manager').list_targets()
    if not targets then
      health.error(tostring(terr), {
        'mbsync.config names the mbsyncrc; without it the plugin reads $XDG_CONFIG_HOME/isyncrc, else ~/.mbsyncrc, as mbsync 1.5 does, and passes it to mbsync (1.3 and 1.4 read only ~/.mbsyncrc)',
      })
    elseif #targets == 0 then
      health.warn('the mbsyncrc has no Channel or Group: there is nothing to sync')
    else
      local lib = assert(native.get())
      health.ok(
        ('accounts (channels and groups of %s): %s'):format(
          lib.mbsync_path() or 'the mbsyncrc',
          table.concat(
            vim.tbl_map(function(tg)
              return tg.name
            end, targets),
            ', '
          )
        )
      )
      for _, name in ipairs(lib.mbsync_passwordless() or {}) do
        health.warn(
          ('%s has neither Pass nor PassCmd: mbsync would ask for its password, which nobody can type in here, so its syncs end with a config error'):format(
            name
          ),
          { 'give it a PassCmd that prints the password (a password manager or keyring command), or a Pass' }
        )
      end
    end
  end

  health.start('himalaya-sync: himalaya')
  local himalaya = require('himalaya.sync.himalaya')
  local cli = himalaya.cli_version()
  if cli then
    health.ok(('%s found: %s'):format(vim.fn.exepath('himalaya'), cli))
  else
    health.info('himalaya CLI not found on PATH (optional)')
  end
  if engine_blocked then
    health.info('the himalaya configuration was not read: ' .. engine_blocked)
  elseif native.is_loaded() then
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
  if not ok then
    health.info('skipped: the configuration is invalid (see above)')
  elseif native.is_loaded() then
    local dir, derr = require('himalaya.sync.lock').lock_dir()
    if dir then
      health.ok(('lock folder %s is owned by you and private (0700)'):format(dir))
    else
      ---@cast derr -?
      health.error(derr)
    end
  else
    health.info('skipped: the library is not loaded')
  end

  health.start('himalaya-sync: auto-sync and IDLE')
  local auto = require('himalaya.sync.auto')
  if auto.is_enabled() then
    local problems = auto.problems()
    if #problems == 0 then
      health.ok(auto.describe())
    else
      health.warn(auto.describe())
      for _, p in ipairs(problems) do
        health.warn(p, { 'fix it; the next tick tries again (or :HimalayaSync full to try now)' })
      end
    end
  else
    health.info(auto.describe() .. ' (:HimalayaSync auto on)')
  end
  local idle = require('himalaya.sync.idle')
  local watch = idle.describe()
  if not idle.is_enabled() then
    -- Turned off by itself, it says why in parentheses.
    if watch:find('(', 1, true) then
      health.warn(watch, { 'fix the cause, then :HimalayaSync idle on' })
    else
      health.info(watch .. ' (:HimalayaSync idle on)')
    end
  elseif watch:find('(stopped)', 1, true) or watch:find('not watching', 1, true) then
    health.warn(watch, { 'fix the cause (:HimalayaSync log), then :HimalayaSync idle on' })
  else
    health.ok(watch)
  end

  health.start('himalaya-sync: OAuth2')
  local oauth = require('himalaya.sync.oauth')
  local names = oauth.accounts()
  if #names == 0 then
    health.info('no account has accounts.NAME.oauth configured')
  elseif not native.is_loaded() then
    health.info('skipped: the library is not loaded')
  elseif engine_blocked then
    health.info('the tokens were not looked at: ' .. engine_blocked)
  end
  for _, name in ipairs(native.is_loaded() and not engine_blocked and names or {}) do
    local st, serr = oauth.status(name)
    local oauth_cfg = cfg.accounts[name].oauth
    -- oauth.accounts() names only accounts that have it.
    ---@cast oauth_cfg -?
    local store = oauth_cfg.store
    if store and store.backend == 'plain' then
      health.warn(('%s: tokens are stored unencrypted (store.backend = "plain")'):format(name), {
        'use "secret-service", "gpg" or "encrypted" unless this machine is otherwise protected',
      })
    end
    -- A refresh_cmd account needs no authorization: its script gets a
    -- token whenever the stored one is missing or expired.
    local expired = st and st.expires_in and st.expires_in < 0
    if not st then
      health.error(('%s: %s'):format(name, serr))
    elseif st.store_error then
      health.error(('%s: %s'):format(name, st.store_error))
    elseif oauth_cfg.refresh_cmd and not st.last_error and (not st.has_token or expired) then
      health.info(
        ('%s: %s; refreshed by refresh_cmd at next use'):format(
          name,
          st.has_token and ('token ' .. oauth._expiry(st.expires_in)) or 'no token stored'
        )
      )
    elseif not st.has_token then
      health.warn(('%s: no token stored'):format(name), { ':HimalayaSync oauth authorize ' .. name })
    elseif st.last_error then
      health.error(('%s: last refresh failed (%s): %s'):format(name, st.last_error.kind, st.last_error.message))
    elseif expired and not st.has_refresh_token then
      health.error(('%s: token expired and no refresh token'):format(name), {
        ':HimalayaSync oauth authorize ' .. name,
      })
    else
      health.ok(
        ('%s: token stored in %s%s%s'):format(
          name,
          st.store,
          st.expires_in and (', ' .. oauth._expiry(st.expires_in)) or '',
          st.has_refresh_token and ', refresh token stored' or ''
        )
      )
    end
  end
end

return M
