#!/usr/bin/env bash
# Berth's main job on a fresh machine: build, start berthd on a private root and socket, and show
# what it serves. Leaves berthd running and prints how to use and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${BERTH_QUICKSTART_DIR:-/tmp/berth-quickstart}
SOCK=$DIR/berthd.sock
cargo build --release --bins
mkdir -p "$DIR"
if [ -S "$SOCK" ] && ./target/release/bctr --address "$SOCK" version >/dev/null 2>&1; then
    echo "berthd already running on $SOCK"
else
    ./target/release/berthd --root "$DIR/root" --state "$DIR/state" --address "$SOCK" \
        >"$DIR/berthd.log" 2>&1 &
    echo $! >"$DIR/berthd.pid"
    for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
fi
B="./target/release/bctr --address $SOCK"
$B version
$B plugins ls
$B namespaces create demo team=berth 2>/dev/null || true
$B namespaces ls
cat <<TXT

berthd is serving $SOCK (log: $DIR/berthd.log).
  bctr --address $SOCK plugins ls      # or containerd's own: ctr --address $SOCK plugins ls
  kill \$(cat $DIR/berthd.pid)          # stop it
TXT
