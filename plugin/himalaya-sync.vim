" Entry points only: nothing here loads the Rust library or any Lua module,
" unless g:himalaya_sync turns on auto-sync, IDLE or the legacy commands.
" Vimscript, not Lua: every Neovim start sources this file, and Lua would
" first compile it all (0.24 ms against 0.13 here, by --startuptime).
if exists('g:loaded_himalaya_sync')
  finish
endif
let g:loaded_himalaya_sync = v:true

" <f-args> splits the arguments as a Lua command's `fargs` does. -bar: it
" can be followed by `| command` and a `" comment`, as most commands can; a
" folder name with `|` or `"` is written `\|`, `\"` (completion does that).
command! -bar -nargs=* -complete=customlist,v:lua.require'himalaya.sync.commands'.complete
      \ HimalayaSync call v:lua.require'himalaya.sync.commands'.run({'fargs': [<f-args>]})

" <Plug> mappings to bind as you like; no default keys.
nnoremap <Plug>(HimalayaSyncFull) <Cmd>HimalayaSync full<CR>
nnoremap <Plug>(HimalayaSyncInbox) <Cmd>HimalayaSync inbox<CR>
nnoremap <Plug>(HimalayaSyncCancel) <Cmd>HimalayaSync cancel<CR>

" Only a g:himalaya_sync that asks for one of them loads any module; the
" merged configuration then decides, so that a setup() called earlier (from
" init.lua) can still turn them off. Off means unset, false or 0 (what Lua's
" false becomes in Vimscript); any other value counts, so that a bad one is
" reported now, not at the first use.
let s:g = get(g:, 'himalaya_sync')
if type(s:g) == v:t_dict
  let s:On = {v -> !(v is v:false || index([v:t_number, v:t_float], type(v)) >= 0 && v == 0)}
  let s:Wants = {k -> type(get(s:g, k)) == v:t_dict && s:On(get(s:g[k], 'enabled', v:false))}
  if s:On(get(s:g, 'legacy_commands', v:false)) || s:Wants('auto_sync') || s:Wants('idle')
    lua require('himalaya.sync')._start_from_plugin()
  endif
  unlet s:On s:Wants
endif
unlet s:g
