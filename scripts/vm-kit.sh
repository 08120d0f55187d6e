#!/bin/bash
# Builds a TCG-run Debian-kernel VM kit under $1 (default target/vm) without installing qemu or a
# kernel system-wide (apt-get install qemu-system-x86 would replace the image's qemu-utils): the
# kernel and qemu packages are downloaded and unpacked into the kit. The guest sees the host root
# read-only (a tmpfs overlay takes its writes), mounts a pure cgroup2 hierarchy, and runs one
# command: `$1/bin/vm-run 'cmd'` prints its output and exits with its status.
# Needs: apt (after apt-get update), python3, kmod (depmod), busybox-static.
set -euo pipefail
D=$(realpath -m "${1:-target/vm}")
mkdir -p "$D/debs" "$D/root" "$D/bin" "$D/shared"
cd "$D/debs"

# 1. the kernel package linux-image-amd64 points at, and every qemu-system-x86 dependency missing here
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
QPKGS=$(apt-get install -s --no-install-recommends qemu-system-x86 | awk '/^Inst/{print $2}')
apt-get download $KPKG $QPKGS >/dev/null
for f in *.deb; do dpkg -x "$f" "$D/root"; done
KVER=${KPKG#linux-image-}
depmod -b "$D/root" "$KVER"

# 2. uncompressed vmlinux for PVH direct boot (skips xz decompression: ~3 s less per boot under TCG)
python3 - "$D/root/boot/vmlinuz-$KVER" "$D/root/boot/vmlinux-$KVER" <<'EOF'
import lzma, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:]))
EOF

# 3. qemu wrapper: private lib/module/firmware dirs
cat > "$D/bin/qemu-system-x86_64" <<EOF
#!/bin/sh
R=$D/root
export LD_LIBRARY_PATH=\$R/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export QEMU_MODULE_DIR=\$R/usr/lib/x86_64-linux-gnu/qemu
exec \$R/usr/bin/qemu-system-x86_64 -L \$R/usr/share/qemu -L \$R/usr/share/seabios -L \$R/usr/lib/ipxe/qemu "\$@"
EOF
chmod +x "$D/bin/qemu-system-x86_64"

# 4. initramfs: static busybox + virtio/9p/overlay modules; host / (9p, ro) + tmpfs overlay becomes the guest root
I=$D/initrd; rm -rf "$I"; mkdir -p "$I"/{bin,mods,newroot,ovl,merged,proc,sys,dev}
cp /bin/busybox "$I/bin/busybox"
M=$D/root/lib/modules/$KVER/kernel
for f in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/9p/9pnet net/9p/9pnet_virtio \
         fs/netfs/netfs fs/fscache/fscache fs/9p/9p fs/overlayfs/overlay; do
  cp "$M/$f.ko" "$I/mods/"; echo "$(basename $f).ko" >> "$I/mods/order"
done
cat > "$I/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m || echo "insmod $m failed"; done
for a in $(cat /proc/cmdline); do case $a in vmcmd=*) B64=${a#vmcmd=};; vmmods=*) MODS=${a#vmmods=};; vmshare=*) SHARE=${a#vmshare=};; vmcwd=*) CWD=${a#vmcwd=};; esac; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /newroot || { echo "9p mount failed"; poweroff -f; }
mount -t tmpfs -o size=80% tmpfs /ovl && mkdir -p /ovl/u /ovl/w
mount -t overlay overlay -o lowerdir=/newroot,upperdir=/ovl/u,workdir=/ovl/w /merged || { echo "overlay failed"; poweroff -f; }
R=/merged
mount -t proc proc $R/proc; mount -t sysfs sys $R/sys; mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm; mount -t devpts devpts $R/dev/pts; mount -t tmpfs tmpfs $R/dev/shm
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mount -t tmpfs tmpfs $R/run
KV=$(uname -r); mkdir -p $R/lib/modules/$KV; mount --bind $R$MODS $R/lib/modules/$KV
mkdir -p $R$SHARE; mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 shared $R$SHARE
cat > $R/.vm-init <<EOS
#!/bin/bash
export DM_DISABLE_UDEV=1 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
cd "$CWD" 2>/dev/null || cd /
bash -c "\$(echo $B64 | base64 -d)"
echo "VM_EXIT=\$?"
sync
echo o > /proc/sysrq-trigger
sleep 10
EOS
chmod +x $R/.vm-init
exec switch_root $R /.vm-init
EOF
chmod +x "$I/init"
(cd "$I" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) > "$D/initrd.img"

# 5. runner: vm-run 'shell command'  -> guest output on stdout, exit code = guest command's exit code
cat > "$D/bin/vm-run" <<EOF
#!/bin/bash
# guest sees host / read-only (+ tmpfs overlay, so writes are discarded); $D/shared is read-write.
D=$D; KVER=$KVER
B64=\$(printf %s "\$1" | base64 -w0)
"\$D/bin/qemu-system-x86_64" -M pc -accel tcg,thread=multi -cpu max -smp \${VM_CPUS:-2} -m \${VM_MEM:-2G} \\
  -nographic -no-reboot -nodefaults -serial stdio -display none \\
  -kernel "\$D/root/boot/vmlinux-\$KVER" -initrd "\$D/initrd.img" \\
  -fsdev local,id=r,path=/,security_model=none,readonly=on,multidevs=remap -device virtio-9p-pci,fsdev=r,mount_tag=hostroot \\
  -fsdev local,id=s,path="\$D/shared",security_model=none -device virtio-9p-pci,fsdev=s,mount_tag=shared \\
  -append "console=ttyS0 quiet loglevel=0 panic=-1 vmmods=\$D/root/lib/modules/\$KVER vmshare=\$D/shared vmcwd=\$PWD vmcmd=\$B64" \\
  < /dev/null | tr -d '\r' | sed -e 's/^.*Booting from ROM\.\.//' > "\${TMPDIR:-/tmp}/vm-run.\$\$"
rc=\$(sed -n 's/^VM_EXIT=//p' "\${TMPDIR:-/tmp}/vm-run.\$\$" | tail -1)
grep -v -e '^VM_EXIT=' -e 'SeaBIOS' -e '^\$' "\${TMPDIR:-/tmp}/vm-run.\$\$" | sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/^c\$//'
rm -f "\${TMPDIR:-/tmp}/vm-run.\$\$"
exit \${rc:-255}
EOF
chmod +x "$D/bin/vm-run"
echo "kit ready in $D (kernel $KVER); try: $D/bin/vm-run 'uname -r; cat /sys/fs/cgroup/cgroup.controllers'"
