#!/usr/bin/env bash
# Berth's test command (the README's): installs what the end-to-end tests need when it is missing,
# builds the binaries the tests drive, then runs every test in the workspace.
# Run as root on Linux: the tests start real daemons, and compare against Debian's containerd.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ctr >/dev/null && command -v containerd >/dev/null || need_apt+=(containerd)
# The test images are built from /bin/busybox, which must be the static build (runs without libc).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need_apt+=(busybox-static)
# containerd's Go client (what dockerd, nerdctl and k3s link), built offline in GOPATH mode by the
# client tests.
command -v go >/dev/null || need_apt+=(golang-go)
[ -d /usr/share/gocode/src/github.com/containerd/containerd ] || need_apt+=(golang-github-containerd-containerd-dev)
# Berth's shim links libseccomp statically (berth-seccomp, through the libseccomp crate; see
# .cargo/config.toml): libseccomp-dev ships the archive.
dpkg-query -W -f='${Status}' libseccomp-dev 2>/dev/null | grep -q 'ok installed' || need_apt+=(libseccomp-dev)
# The btrfs snapshotter's tests format loop-backed btrfs filesystems (and enable quotas on one).
command -v mkfs.btrfs >/dev/null && command -v btrfs >/dev/null || need_apt+=(btrfs-progs)
# The devmapper snapshotter's VM tests format a base device with xfs too.
command -v mkfs.xfs >/dev/null || need_apt+=(xfsprogs)
# berth-remotes' tests push to and pull from a real local registry (Distribution), one of them
# behind htpasswd basic auth.
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need_apt[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q "${need_apt[@]}" >/dev/null; }
fi

# PyPI's current grpcio in a virtualenv, for the tests that drive berthd as Python tools do.
venv=target/pyvenv
if ! "$venv/bin/python" -c 'import grpc' 2>/dev/null; then
    echo "creating $venv with grpcio from PyPI"
    python3 -m venv "$venv" 2>/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q --upgrade grpcio
fi
export BERTH_TEST_PYTHON="$PWD/$venv/bin/python"

cargo build --workspace --bins
cargo test --workspace "$@"
# With no filter: the tests that need a pure cgroup v2 host, in one VM boot.
if [ $# -eq 0 ]; then
    ./scripts/vm-tests.sh
fi
