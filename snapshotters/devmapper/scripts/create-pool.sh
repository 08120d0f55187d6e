#!/usr/bin/env bash
# Makes a loop-backed device-mapper thin pool for trying the devmapper snapshotter:
#   create-pool.sh DIR POOL_NAME [DATA_SIZE] [META_SIZE]
# DIR gets two sparse files (data, meta; default 10G and 1G), each attached to a loop device, and
# POOL_NAME becomes a thin-pool over them (64 KiB blocks). Then configure berthd with:
#   [plugins."io.containerd.snapshotter.v1.devmapper"]
#     pool_name = "POOL_NAME"
#     base_image_size = "8GB"
# The pool lasts until reboot; run the script again after a reboot to re-attach the same files
# (an existing, non-empty metadata file is kept). Remove it with `dmsetup remove POOL_NAME` and
# `losetup -d` of both loop devices. Needs root, losetup and dmsetup (a helper for people; berthd
# itself drives device-mapper through its ioctls).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,4p' "$0" >&2; exit 2; }
dir=$1 pool=$2 data_size=${3:-10G} meta_size=${4:-1G}
modprobe -a loop dm_thin_pool 2>/dev/null || true
mkdir -p "$dir"
fresh=0
[ -s "$dir/meta" ] || fresh=1
[ -e "$dir/data" ] || truncate -s "$data_size" "$dir/data"
[ -e "$dir/meta" ] || truncate -s "$meta_size" "$dir/meta"
data_dev=$(losetup --find --show "$dir/data")
meta_dev=$(losetup --find --show "$dir/meta")
if [ $fresh = 1 ]; then
    # A new pool starts from zeroed metadata.
    dd if=/dev/zero of="$meta_dev" bs=4096 count=1 status=none
fi
sectors=$(blockdev --getsz "$data_dev")
# 128 sectors = 64 KiB per block; low water mark 32768 blocks.
dmsetup create "$pool" --table "0 $sectors thin-pool $meta_dev $data_dev 128 32768"
echo "thin pool $pool: data $data_dev ($dir/data), metadata $meta_dev ($dir/meta)"
dmsetup status "$pool"
