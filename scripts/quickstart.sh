#!/usr/bin/env bash
# Berth's main job on a fresh machine (as root): build, start berthd on a private root and socket,
# import an image built offline from Debian's busybox-static (unpacked into overlayfs snapshots)
# and run a container from it that says hello. Leaves berthd running and prints how to use and
# stop it.
set -euo pipefail
cd "$(dirname "$0")/.."

install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$@" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
}
# busybox-static for the offline image; libseccomp-dev for Berth's shim (containerd-shim-berth-v1,
# which runs the container: no runc needed).
command -v busybox >/dev/null || install busybox-static
dpkg-query -W -f='${Status}' libseccomp-dev 2>/dev/null | grep -q 'ok installed' || install libseccomp-dev

DIR=${BERTH_QUICKSTART_DIR:-/tmp/berth-quickstart}
SOCK=$DIR/berthd.sock
cargo build --release --bins
mkdir -p "$DIR"
B="./target/release/bctr --address $SOCK"
if [ -S "$SOCK" ] && $B version >/dev/null 2>&1; then
    echo "berthd already running on $SOCK"
else
    ./target/release/berthd --root "$DIR/root" --state "$DIR/state" --address "$SOCK" \
        >"$DIR/berthd.log" 2>&1 &
    echo $! >"$DIR/berthd.pid"
    for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
fi
$B version
$B plugins ls

./target/release/make-image "$DIR/busybox.tar"
$B images import "$DIR/busybox.tar"
$B images ls
$B snapshots tree
# A container left by an interrupted earlier run would block the name.
$B tasks rm --force hello >/dev/null 2>&1 || true
$B containers rm hello >/dev/null 2>&1 || true
$B run --rm docker.io/library/busybox:berth hello \
    sh -c 'echo "Hello from a Berth container: $(hostname), pid $$, $(uname -sr)"'
cat <<TXT

berthd is serving $SOCK (log: $DIR/berthd.log).
  bctr --address $SOCK run -d docker.io/library/busybox:berth c1 sleep 1000
  bctr --address $SOCK tasks ls
  ctr  --address $SOCK images ls        # containerd's own client works too
  kill \$(cat $DIR/berthd.pid)           # stop berthd (containers keep running; a new berthd finds them)
TXT
