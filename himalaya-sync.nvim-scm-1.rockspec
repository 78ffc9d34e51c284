-- LuaRocks spec for the development version (scm): builds the Rust library
-- with luarocks-build-rust-mlua and installs it as the C module
-- `himalaya_sync`, next to the Lua modules, the plugin file, the help and
-- the `himalaya-sync` command-line tool.
-- The Lua loader (lua/himalaya/sync/native.lua) finds the library on
-- package.cpath and prefers it over a target/release build.
rockspec_format = '3.0'
package = 'himalaya-sync.nvim'
version = 'scm-1'

source = {
  url = 'git+https://github.com/you/himalaya-sync.nvim',
}

description = {
  summary = 'Email sync for Neovim: mbsync runner, named locks, OAuth2 tokens',
  detailed = [[
A Neovim plugin that runs mbsync for himalaya users: queued and cancellable
syncs, locks shared between Neovims, OAuth2 tokens, auto-sync. The engine is a
Rust library loaded into Neovim's LuaJIT; building it needs Rust 1.88+.]],
  homepage = 'https://github.com/you/himalaya-sync.nvim',
  license = 'MIT',
  labels = { 'neovim', 'email', 'mbsync' },
}

-- Neovim's Lua is LuaJIT (Lua 5.1 API); the plugin uses `vim.*` and cannot
-- run in any other Lua.
dependencies = {
  'lua == 5.1',
}

build_dependencies = {
  'luarocks-build-rust-mlua',
}

build = {
  type = 'rust-mlua',
  -- The backend itself adds the feature of the Lua its luarocks runs on
  -- (`luajit` on LuaJIT, `lua51` on PUC Lua 5.1; Cargo.toml has both).
  -- Naming `luajit` here too would make a PUC 5.1 luarocks build with two
  -- Lua features, which mlua rejects; turning the defaults off keeps the
  -- crate's default `luajit` out of a `lua51` build for the same reason.
  default_features = false,
  -- target/release/libhimalaya_sync.so, installed as himalaya_sync.so.
  modules = {
    himalaya_sync = 'himalaya_sync',
  },
  install = {
    -- The command-line tool, which the cargo build above makes too: the
    -- relay of throttled accounts and the OAuth2 `PassCmd` need it. The
    -- loader looks for it in the tree's bin folder.
    bin = {
      ['himalaya-sync'] = 'target/release/himalaya-sync',
    },
    lua = {
      ['himalaya.sync.auto'] = 'lua/himalaya/sync/auto.lua',
      ['himalaya.sync.commands'] = 'lua/himalaya/sync/commands.lua',
      ['himalaya.sync.config'] = 'lua/himalaya/sync/config.lua',
      ['himalaya.sync.health'] = 'lua/himalaya/sync/health.lua',
      ['himalaya.sync.himalaya'] = 'lua/himalaya/sync/himalaya.lua',
      ['himalaya.sync.idle'] = 'lua/himalaya/sync/idle.lua',
      ['himalaya.sync.init'] = 'lua/himalaya/sync/init.lua',
      ['himalaya.sync.legacy'] = 'lua/himalaya/sync/legacy.lua',
      ['himalaya.sync.lock'] = 'lua/himalaya/sync/lock.lua',
      ['himalaya.sync.manager'] = 'lua/himalaya/sync/manager.lua',
      ['himalaya.sync.mbsync'] = 'lua/himalaya/sync/mbsync.lua',
      ['himalaya.sync.native'] = 'lua/himalaya/sync/native.lua',
      ['himalaya.sync.oauth'] = 'lua/himalaya/sync/oauth.lua',
      ['himalaya.sync.version'] = 'lua/himalaya/sync/version.lua',
      ['neotex.plugins.tools.himalaya.sync.lock'] = 'lua/neotex/plugins/tools/himalaya/sync/lock.lua',
      ['neotex.plugins.tools.himalaya.sync.manager'] = 'lua/neotex/plugins/tools/himalaya/sync/manager.lua',
      ['neotex.plugins.tools.himalaya.sync.mbsync'] = 'lua/neotex/plugins/tools/himalaya/sync/mbsync.lua',
      ['neotex.plugins.tools.himalaya.sync.oauth'] = 'lua/neotex/plugins/tools/himalaya/sync/oauth.lua',
    },
  },
  -- The plugin file (the :HimalayaSync command) and the help, as rocks.nvim
  -- expects them in a Neovim plugin rock.
  copy_directories = { 'plugin', 'doc' },
}
