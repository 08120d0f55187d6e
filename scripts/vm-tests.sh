#!/usr/bin/env bash
# The tests that need what this host lacks, in one boot of a QEMU/TCG VM with Debian's kernel and
# a pure cgroup v2 hierarchy (most real hosts; this one is hybrid): containers run through
# berthd with Berth's own shim — exit codes, cgroups, exec, pause, v2 metrics, OOM, the Go client's
# Update, restart recovery — the runtime tests (limits, seccomp, capabilities, masked paths,
# user namespaces, real containerd with Berth's shim) and the parity test (ctr run flags on berthd
# and on containerd+runc, what the container sees compared). Builds the VM kit under target/vm the first time (scripts/vm-kit.sh).
# Run as root, after `cargo build --workspace --bins`.
set -euo pipefail
cd "$(dirname "$0")/.."

kit=target/vm
if [ ! -x "$kit/bin/vm-run" ]; then
    command -v depmod >/dev/null || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q kmod >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q kmod >/dev/null; }
    }
    echo "building the VM kit in $kit"
    rm -rf "$kit"
    # The kit downloads Debian packages: with stale package lists, refresh them once and retry.
    ./scripts/vm-kit.sh "$kit" >"target/vm-kit.log" 2>&1 || {
        apt-get update -q >/dev/null
        rm -rf "$kit"
        ./scripts/vm-kit.sh "$kit" >"target/vm-kit.log" 2>&1
    } || {
        tail -20 target/vm-kit.log
        echo "vm-tests: building the VM kit failed (log: target/vm-kit.log)" >&2
        exit 1
    }
fi

tasks=$(cargo test -p berth-tests --test tasks --no-run 2>&1 | sed -n 's/.*Executable.*(\(.*\))$/\1/p' | tail -1)
[ -x "$tasks" ] || { echo "vm-tests: no tasks test binary" >&2; exit 1; }
runtime=$(cargo test -p berth-tests --test runtime --no-run 2>&1 | sed -n 's/.*Executable.*(\(.*\))$/\1/p' | tail -1)
[ -x "$runtime" ] || { echo "vm-tests: no runtime test binary" >&2; exit 1; }
parity=$(cargo test -p berth-tests --test parity --no-run 2>&1 | sed -n 's/.*Executable.*(\(.*\))$/\1/p' | tail -1)
[ -x "$parity" ] || { echo "vm-tests: no parity test binary" >&2; exit 1; }
# The devmapper snapshotter (this host's kernel has no device-mapper): its conformance suite with
# crash repair and a full pool (built with the crate's vm-tests feature), and berthd on a thin pool.
dmconf=$(cargo test -p berth-snapshotter-devmapper --features vm-tests --test conformance --no-run 2>&1 | sed -n 's/.*Executable.*(\(.*\))$/\1/p' | tail -1)
[ -x "$dmconf" ] || { echo "vm-tests: no devmapper conformance test binary" >&2; exit 1; }
devmapper=$(cargo test -p berth-tests --test devmapper --no-run 2>&1 | sed -n 's/.*Executable.*(\(.*\))$/\1/p' | tail -1)
[ -x "$devmapper" ] || { echo "vm-tests: no devmapper test binary" >&2; exit 1; }
# The guest's root is an overlay, on which overlayfs snapshots cannot stack: temporary files go to
# the guest's /run, a tmpfs (not a tmpfs over /tmp: the checkout may live there).
cmd="mkdir -p /run/vm-tmp && export TMPDIR=/run/vm-tmp && grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts && cd $PWD/tests && $PWD/$tasks --test-threads=1 --color never ctr_run_exit detached memory_hog go_client survive && $PWD/$runtime --test-threads=1 --color never && $PWD/$parity --color never"
# devmapper: loop-backed thin pools; temporary files on an ext4 (the suite's xattr case needs user
# xattrs, which this kernel's tmpfs lacks).
cmd="$cmd && modprobe -a loop dm_thin_pool && mkdir -p /run/vm-dm && truncate -s 8G /run/vm-tmp/dm-scratch.img && mkfs.ext4 -q -F /run/vm-tmp/dm-scratch.img && mount -o loop /run/vm-tmp/dm-scratch.img /run/vm-dm && export TMPDIR=/run/vm-dm && $PWD/$dmconf --color never && $PWD/$devmapper --test-threads=1 --color never --include-ignored"
echo "vm-tests: tasks, runtime and devmapper on cgroup v2, Debian kernel $(ls "$kit"/root/lib/modules)"
log=target/vm-tests.log
VM_MEM=3G "$kit/bin/vm-run" "$cmd" >"$log" 2>&1 && rc=0 || rc=$?
grep -E '^test |test result|panicked|left:|right:|assert' "$log" || true
if [ $rc -ne 0 ] || ! grep -q 'test result: ok\. 5 passed' "$log" \
    || ! grep -q 'test result: ok\. 6 passed' "$log" \
    || ! grep -q 'test result: ok\. 12 passed' "$log" \
    || ! grep -q 'test result: ok\. 2 passed' "$log" \
    || ! grep -q 'test result: ok\. 30 passed; 0 failed; 1 ignored' "$log"; then
    tail -40 "$log"
    echo "vm-tests: FAILED (exit $rc; log: $log)" >&2
    exit 1
fi
