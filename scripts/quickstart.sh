#!/usr/bin/env bash
# Berth's main job on a fresh machine (as root): build, start berthd on a private root and socket,
# import an image built offline from Debian's busybox-static, unpack it into overlayfs snapshots
# and mount its root file system. Leaves berthd running and prints how to use and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v busybox >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q busybox-static >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q busybox-static >/dev/null; }
}

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
mkdir -p "$DIR/rootfs"
mountpoint -q "$DIR/rootfs" && $B images unmount --rm "$DIR/rootfs" >/dev/null
$B images mount docker.io/library/busybox:berth "$DIR/rootfs"
ls "$DIR/rootfs" "$DIR/rootfs/bin" | head -20
cat <<TXT

berthd is serving $SOCK (log: $DIR/berthd.log); the image is mounted read-only on $DIR/rootfs.
  bctr --address $SOCK images unmount --rm $DIR/rootfs
  ctr  --address $SOCK images ls        # containerd's own client works too
  kill \$(cat $DIR/berthd.pid)           # stop berthd
TXT
