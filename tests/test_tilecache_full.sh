#!/bin/sh
# test_tilecache_full.sh TEST_BINARY: runs `TEST_BINARY full` with TMPDIR on a 1 MiB tmpfs
# mounted in a private user+mount namespace, so the mount vanishes with the process even if
# the test is killed. Exit 77 (skip) where such namespaces are not allowed.
bin="$1"
command -v unshare >/dev/null 2>&1 || { echo "skip: unshare not installed"; exit 77; }
unshare -rm true 2>/dev/null || { echo "skip: no unprivileged user namespaces here"; exit 77; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/hc-tilecache-full-XXXXXX") || exit 1
unshare -rm sh -c '
  mount -t tmpfs -o size=1m hc-tilecache-full "$1" || { echo "skip: cannot mount tmpfs"; exit 77; }
  TMPDIR="$1" "$2" full
' sh "$dir" "$bin"
rc=$?
rmdir "$dir" 2>/dev/null
exit $rc
