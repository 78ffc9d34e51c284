#!/usr/bin/env bash
# The part of `make test` after the build: the tests in the foreground
# (`make test-rust`, `test-lua`, `test-other-nvims`, stopping at the first
# that fails) and `make lint` beside them at the lowest CPU priority. Either
# failing fails this; lint's output comes after the tests', whole.
#
#   MAKE=make scripts/test-and-lint.sh
#
# Why beside them: the tests mostly wait on servers, processes and timers,
# and leave about half of this machine's two CPUs idle, while clippy checks
# every dependency once more in its own mode, a minute of both CPUs that
# stood alone before the tests. At the lowest priority it gets only what
# the tests leave: a test process that wakes takes the CPU from it at once.
# Clippy gets a target folder of its own, as cargo lets one command at a
# time use a target folder.
#
# The lowest priority is nice 19 twice. Lint runs in a session of its own
# (setsid), so that it and what it started can be stopped together when the
# tests are interrupted. With the kernel's autogroups (Debian's default),
# each session shares the CPUs as one group, whatever its processes' nice:
# a new session at nice 0 took half of them from the tests, whose engine
# tests then took 37 s instead of 21. So the session's group gets nice 19
# (/proc/self/autogroup), and its processes too, for kernels without
# autogroups. The kernel takes such a change from a user at most every
# 100 ms across the machine, so a refused write is tried again.
#
# Its own session also escapes a kill of `make test`'s process group, and
# a SIGKILL runs no trap: so the session looks for this script every
# second, and once it is gone removes lint's log and stops itself.
set -uo pipefail

make=${MAKE:-make}
log=$(mktemp "${TMPDIR:-/tmp}/himalaya-sync-lint.XXXXXX") || exit 1

CARGO_TARGET_DIR=target/lint setsid bash -c \
  'for _ in 1 2 3; do { echo 19 >/proc/self/autogroup; } 2>/dev/null && break; sleep 0.2; done
   nice -n 19 "$0" --no-print-directory lint &
   lint=$!
   while kill -0 "$lint" 2>/dev/null; do
     kill -0 "$1" 2>/dev/null || { rm -f "$2"; kill -TERM -- "-$$"; }
     sleep 1
   done
   wait "$lint"' \
  "$make" "$$" "$log" >"$log" 2>&1 &
lint=$!

cleanup() {
  kill -TERM -- "-$lint" 2>/dev/null
  rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

tests=0
for t in test-rust test-lua test-other-nvims; do
  "$make" --no-print-directory "$t" || {
    tests=$?
    break
  }
done

wait "$lint"
linted=$?
echo
echo "== make lint (it ran beside the tests)"
cat "$log"
if [ "$linted" -ne 0 ]; then
  echo "make lint failed (exit $linted)"
fi
if [ "$tests" -ne 0 ]; then
  exit "$tests"
fi
exit "$linted"
