// StyLua (the npm WebAssembly build, no download at install) over the
// project's Lua files, with the settings of .stylua.toml.
//
//   node scripts/stylua.cjs --check FILE...   exit 1 and list files that differ
//   node scripts/stylua.cjs --write FILE...   format in place
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const stylua = require(path.join(root, '.deps/stylua/node_modules/@johnnymorganz/stylua'));

function config() {
  const c = stylua.Config.new ? stylua.Config.new() : new stylua.Config();
  c.column_width = 120;
  c.indent_type = stylua.IndentType.Spaces;
  c.indent_width = 2;
  c.line_endings = stylua.LineEndings.Unix;
  c.quote_style = stylua.QuoteStyle.AutoPreferSingle;
  c.call_parentheses = stylua.CallParenType.Always;
  c.syntax = stylua.LuaVersion.LuaJIT;
  return c;
}

const [mode, ...files] = process.argv.slice(2);
if ((mode !== '--check' && mode !== '--write') || files.length === 0) {
  console.error('usage: stylua.cjs --check|--write FILE...');
  process.exit(2);
}
let differ = 0;
for (const file of files) {
  const code = fs.readFileSync(file, 'utf8');
  let out;
  try {
    out = stylua.formatCode(code, config(), undefined, stylua.OutputVerification.None);
  } catch (e) {
    console.error(`${file}: ${e.message || e}`);
    differ++;
    continue;
  }
  if (out !== code) {
    if (mode === '--write') {
      fs.writeFileSync(file, out);
    } else {
      console.error(`${file}: not formatted (run make format)`);
      differ++;
    }
  }
}
process.exit(differ ? 1 : 0);
