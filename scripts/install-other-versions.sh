#!/usr/bin/env bash
# Installs the other versions `make test` runs the specs with, Debian's own
# builds, and only what is missing:
#   - two more Neovims (`make test-other-nvims`): 0.10, the oldest the
#     plugin supports, from Debian 13 (trixie), and the newest Debian has
#     (0.12 or later) from forky (testing), else sid;
#   - isync 1.3 and 1.5 (`make test-other-mbsync`), Debian 11's and 13's
#     mbsync, beside the 1.4 of Debian 12 that the tests use otherwise: 1.3
#     draws its progress differently, 1.5 spells folder names and its
#     messages differently. (Debian 11 is read from archive.debian.org once
#     deb.debian.org no longer has it.)
# apt downloads each with a source list of its own in .deps/ (nothing is
# installed system-wide, and the host's apt setup is not touched); the
# packages are unpacked into the same folder, and patchelf points the
# binary at their own C library and loader, so it also runs on an older
# Debian. A Neovim's runtime files come as VIMRUNTIME.
set -euo pipefail
shopt -s nullglob

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deps="$root/.deps"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

missing=()
command -v patchelf >/dev/null 2>&1 || missing+=(patchelf)
[ -f "$keyring" ] || missing+=(debian-archive-keyring)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "install-other-versions: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "install-other-versions: missing Debian packages; run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# version PROGRAM DIR: the version line of DIR's PROGRAM (nvim or mbsync).
version() {
  [ -x "$2/bin/$1" ] || return 1
  case $1 in
    nvim) VIMRUNTIME="$2/runtime" "$2/bin/nvim" --version 2>/dev/null | head -n1 ;;
    *) "$2/bin/$1" --version 2>/dev/null | head -n1 ;;
  esac
}

# Unpacks Debian SUITE's PACKAGE and everything it needs to run, down to
# the C library, into DIR, with its PROGRAM in DIR/bin; false when the
# suite has none.
unpack() {
  local package=$1 program=$2 suite=$3 dir=$4
  rm -rf "$dir"
  mkdir -p "$dir/apt/lists/partial" "$dir/apt/archives/partial" "$dir/debs" "$dir/root" "$dir/bin"
  local mirror=http://deb.debian.org/debian
  # An empty package status: apt then takes the suite's own versions, not
  # the newer ones this machine has installed (Debian 12's isync is newer
  # than Debian 11's).
  : >"$dir/apt/status"
  local apt_opts=(-o "Dir::Etc::sourcelist=$dir/apt/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::State::status=$dir/apt/status" -o "Dir::Cache=$dir/apt"
    -o "APT::Sandbox::User=$(id -un)")
  # archive/SUITE: a release moved to archive.debian.org, whose Release
  # files are past their Valid-Until date.
  if [[ $suite == archive/* ]]; then
    suite=${suite#archive/}
    mirror=http://archive.debian.org/debian
    apt_opts+=(-o Acquire::Check-Valid-Until=false)
  fi
  echo "deb [signed-by=$keyring] $mirror $suite main" >"$dir/apt/sources.list"
  apt-get "${apt_opts[@]}" update -qq --error-on=any
  local list pkgs
  list=$(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances "$package" 2>/dev/null) || return 1
  mapfile -t pkgs < <(grep -v '^[ <]' <<<"$list" | sort -u)
  printf '%s\n' "${pkgs[@]}" | grep -qx "$package" || return 1
  (cd "$dir/debs" && apt-get "${apt_opts[@]}" download -qq "${pkgs[@]}")
  local debs=("$dir"/debs/*.deb) deb
  [ ${#debs[@]} -gt 0 ] || return 1
  for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$dir/root"; done
  # Before Debian 12 merged /lib into /usr/lib, packages put the C library
  # into /lib and most others into /usr/lib: both are searched.
  local libc loader libdirs
  libc=$(find "$dir/root/usr/lib" "$dir/root/lib" -maxdepth 2 -name libc.so.6 2>/dev/null | head -n1)
  loader=$(find "$(dirname "$libc")" -maxdepth 1 \( -name 'ld-linux*.so.*' -o -name 'ld64.so.*' \) | head -n1)
  libdirs=$(dirname "$libc")
  local triplet=${libdirs##*/} other
  for other in "$dir/root/usr/lib/$triplet" "$dir/root/lib/$triplet"; do
    [ -d "$other" ] && [ "$other" != "$libdirs" ] && libdirs+=":$other"
  done
  cp "$dir/root/usr/bin/$program" "$dir/bin/$program"
  # An RPATH (not RUNPATH) also covers the libraries' own dependencies,
  # such as LuaJIT's libgcc_s.
  patchelf --set-interpreter "$loader" --set-rpath "$libdirs" --force-rpath "$dir/bin/$program"
  if [ "$program" = nvim ]; then
    ln -s root/usr/share/nvim/runtime "$dir/runtime"
  fi
  rm -rf "$dir/apt" "$dir/debs"
}

# install_from_debian PACKAGE PROGRAM DIR VERSION_RE SUITE...: from the
# first SUITE whose PACKAGE has a PROGRAM whose version line matches.
# (Called in a condition, unpack runs without `set -e`: a step that fails,
# such as apt without a network, shows its own error and leaves no
# matching program, which is checked.)
install_from_debian() {
  local package=$1 program=$2 dir=$3 version_re=$4 suite
  shift 4
  version "$program" "$dir" | grep -Eq "$version_re" && return
  for suite in "$@"; do
    echo "install-other-versions: installing $package from Debian $suite's packages into $dir"
    if unpack "$package" "$program" "$suite" "$dir" && version "$program" "$dir" | grep -Eq "$version_re"; then
      return
    fi
    echo "install-other-versions: no $package matching $version_re from Debian $suite (see above)" >&2
  done
  rm -rf "$dir"
  echo "install-other-versions: cannot install $package ($version_re) into $dir" >&2
  exit 1
}

# The argument says what to install (nvim, mbsync); all when none.
want=${1:-all}
if [ "$want" = all ] || [ "$want" = nvim ]; then
  install_from_debian neovim nvim "$deps/nvim-oldest" '^NVIM v0\.10\.' trixie
  install_from_debian neovim nvim "$deps/nvim-newest" '^NVIM v(0\.(1[2-9]|[2-9][0-9])|[1-9][0-9]*)\.' forky sid
fi
if [ "$want" = all ] || [ "$want" = mbsync ]; then
  install_from_debian isync mbsync "$deps/isync-1.3" '^isync 1\.3\.' bullseye archive/bullseye
  install_from_debian isync mbsync "$deps/isync-1.5" '^isync 1\.5\.' trixie
fi
