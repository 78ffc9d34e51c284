-- lazy.nvim reads this spec from the plugin's root (a "packspec").
return {
  'himalaya-sync.nvim',
  build = 'cargo build --release',
  cmd = 'HimalayaSync',
}
