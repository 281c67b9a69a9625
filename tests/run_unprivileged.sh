#!/bin/bash
# Run the given pytest files as nobody (uid/gid 65534, no groups), with HOME and TMPDIR in a
# private temp dir: the tests that need no root must keep needing none (`make unprivileged`).
#
# The venv's interpreter may be a link into a home nobody cannot enter (pyenv under /root); then
# the system's python of the same version runs the tests on the venv's packages (same ABI).
# If nobody can run neither, the tests run as root and a warning says so.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
ver=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
site=$venv/lib/python$ver/site-packages
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chown 65534:65534 "$tmp"

as_nobody() {  # as_nobody PYTHONPATH-prefix python args...
  local path=$1
  shift
  setpriv --reuid=65534 --regid=65534 --clear-groups \
    env -i HOME="$tmp" TMPDIR="$tmp" PATH=/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH="$path${path:+:}$repo" "$@"
}

cd "$repo"
for cand in "$venv/bin/python|" "/usr/local/bin/python$ver|$site" "/usr/bin/python$ver|$site"; do
  py=${cand%%|*}
  path=${cand#*|}
  if as_nobody "$path" "$py" -c 'import pytest, bocker_engine' 2>/dev/null; then
    echo "as nobody ($py): $*"
    as_nobody "$path" "$py" -m pytest -q -p no:cacheprovider "$@"
    exit
  fi
done
echo "WARNING: nobody cannot run python or read $repo; running as root: $*" >&2
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
