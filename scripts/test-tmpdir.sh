#!/usr/bin/env bash
# Runs a test command (`make test-rust`, `test-lua`, `test-other-nvims`)
# with TMPDIR set to a fresh private folder, and removes that folder when
# the command ends, also when it fails or is interrupted.
#
#   scripts/test-tmpdir.sh COMMAND [ARG...]
#
# The folder is on tmpfs (/dev/shm) when the machine has one with room to
# spare, as the benchmarks' is (bench/run.sh). The IMAP fixtures write and
# delete thousands of small mail files per spec, and on ext4 each new file
# then costs a search past the recently deleted inodes: that search was
# most of the Lua specs' system time here (perf: `recently_deleted`), and
# the Lua specs took 3m48s, against 3m00s on tmpfs. A small /dev/shm (a
# container's default is 64 MiB) is passed over for TMPDIR, else /tmp.
set -uo pipefail

# Two specs at a time, the largest fixture 6,000 messages: well under this.
need_kib=$((2 * 1024 * 1024))

base=${TMPDIR:-/tmp}
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  free_kib=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
  if [ "${free_kib:-0}" -ge "$need_kib" ]; then
    base=/dev/shm
  fi
fi
# A short name: the IMAP fixture's folder, some levels below, must stay
# within 78 characters (dovecot's Unix socket paths).
dir=$(mktemp -d "$base/hst.XXXXXX") || exit 1

cleanup() {
  rm -rf "$dir"
}
trap cleanup EXIT
# Bash runs these once the command has ended (it gets Ctrl-C too, being in
# the same process group); exiting then runs the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM HUP

TMPDIR=$dir "$@"
