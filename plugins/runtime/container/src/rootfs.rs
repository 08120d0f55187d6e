//! The container's root filesystem, set up inside its new mount namespace before the process is
//! started: propagation, the rootfs bind, the spec's mounts in order, `/dev`, the console, then
//! `pivot_root`, and after it the masked and read-only paths and a read-only root.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDeviceType, Mount, Spec};

use crate::error::{Error, Result};
use crate::syscall::{secure_join, Syscall};

/// How the `cgroup` mount of a spec is served on this host (the shim knows the hierarchy and the
/// container's cgroup; this crate only mounts).
#[derive(Debug, Clone, Default)]
pub enum CgroupMounts {
    /// No cgroup filesystem is available: a `cgroup` mount is skipped.
    #[default]
    None,
    /// A unified (v2) host: `host_dir` is the container's cgroup directory.
    V2 { host_dir: PathBuf },
    /// v1 (or hybrid): one entry per mounted hierarchy — its name as mounted (`cpu,cpuacct`) and
    /// the container's directory in it.
    V1 { dirs: Vec<(String, PathBuf)> },
}

/// What [`prepare`] needs beyond the spec.
#[derive(Debug, Clone)]
pub struct RootfsOptions<'a> {
    /// The root filesystem, an absolute host path (already mounted by the shim).
    pub rootfs: &'a Path,
    pub cgroups: &'a CgroupMounts,
    /// The container has a new cgroup namespace (a v2 `cgroup` mount is then a fresh cgroup2).
    pub cgroup_ns: bool,
    /// In a new user namespace device nodes cannot be made: they are bind-mounted from the host.
    pub user_ns: bool,
}

/// Mount flags and data from a mount's options, as mount(8) and runc read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Propagation changes, applied by separate calls after the mount.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options, comma-joined.
    pub data: String,
}

impl MountOptions {
    pub fn parse(options: &[String]) -> MountOptions {
        let mut out = MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: String::new(),
        };
        let mut data = Vec::new();
        for o in options {
            let (set, clear) = match o.as_str() {
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
                "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
                "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
                "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
                "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
                "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
                "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
                "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
                | "unbindable" | "runbindable" => {
                    if let Some(p) = propagation_flag(o) {
                        out.propagation.push(p);
                    }
                    continue;
                }
                // Options runc understands that change nothing here.
                "tmpcopyup" | "idmap" | "ridmap" => continue,
                _ => {
                    data.push(o.as_str());
                    continue;
                }
            };
            out.flags.insert(set);
            out.flags.remove(clear);
        }
        out.data = data.join(",");
        out
    }
}

/// `rprivate` → MS_PRIVATE|MS_REC and so on; `None` for anything else.
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    let (base, rec) = match name.strip_prefix('r') {
        Some(b) if matches!(b, "private" | "shared" | "slave" | "unbindable") => (b, true),
        _ => (name, false),
    };
    let flag = match base {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(if rec { flag | MsFlags::MS_REC } else { flag })
}

/// The device nodes every container gets (runc's defaults): name, major, minor.
const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn is_bind(m: &Mount, opts: &MountOptions) -> bool {
    m.typ().as_deref() == Some("bind") || opts.flags.contains(MsFlags::MS_BIND)
}

/// Everything before `pivot_root`, run in the container's new mount namespace with the host's
/// tree still visible. Returns whether the spec mounted `/dev` (so default devices were made).
pub fn prepare(sys: &dyn Syscall, spec: &Spec, o: &RootfsOptions<'_>) -> Result<()> {
    let linux = spec.linux().as_ref();
    // Nothing done in here may reach the host: everything below `/` becomes a slave (or what
    // the spec asks) before the first mount.
    let root_propagation = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .map(|p| propagation_flag(p).ok_or_else(|| Error::Spec(format!("rootfsPropagation {p:?}"))))
        .transpose()?;
    let initial = match root_propagation {
        Some(p) if p.contains(MsFlags::MS_PRIVATE) => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    sys.mount(None, Path::new("/"), None, initial, None)?;
    // pivot_root needs the new root to be a mount point.
    sys.mount(
        Some(o.rootfs),
        o.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;

    let mut dev_mounted = false;
    for m in spec.mounts().as_deref().unwrap_or_default() {
        if m.destination() == Path::new("/dev") {
            dev_mounted = true;
        }
        mount_one(sys, m, o)?;
    }
    if dev_mounted {
        make_devices(sys, spec, o)?;
    }
    dev_symlinks(sys, o.rootfs)?;
    // As runc: the first process's working directory is made when the image lacks it (root's,
    // 0755, inside the mounts just made); an exec'd process's must exist.
    if let Some(cwd) = spec.process().as_ref().map(|p| p.cwd()) {
        let dir = secure_join(o.rootfs, cwd)?;
        if std::fs::symlink_metadata(&dir).is_err() {
            sys.mkdir_all(&dir, 0o755)?;
        }
    }
    Ok(())
}

fn mount_one(sys: &dyn Syscall, m: &Mount, o: &RootfsOptions<'_>) -> Result<()> {
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
    let dest = secure_join(o.rootfs, m.destination())?;
    let typ = m.typ().as_deref().unwrap_or("");
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(sys, &dest, &opts, o);
    }
    let data = Some(opts.data.as_str()).filter(|d| !d.is_empty());
    if is_bind(m, &opts) {
        let source = m
            .source()
            .as_deref()
            .ok_or_else(|| Error::Spec(format!("bind mount {} has no source", dest.display())))?;
        let is_dir = std::fs::metadata(source)
            .map_err(|e| Error::Path {
                action: "stat bind source",
                path: source.to_owned(),
                source: crate::syscall::io_to_nix(&e),
            })?
            .is_dir();
        if is_dir {
            sys.mkdir_all(&dest, 0o755)?;
        } else {
            sys.create_file(&dest)?;
        }
        let bind = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        sys.mount(Some(source), &dest, None, bind, None)?;
        // A bind mount ignores every other flag: they take effect on a remount.
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            sys.mount(
                None,
                &dest,
                None,
                extra | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None,
            )?;
        }
    } else {
        sys.mkdir_all(&dest, 0o755)?;
        // No source is an empty one, as runc mounts it (`/proc/mounts` then shows none).
        let source = m.source().as_deref().unwrap_or(Path::new(""));
        let fstype = Some(typ).filter(|t| !t.is_empty());
        sys.mount(Some(source), &dest, fstype, opts.flags, data)?;
    }
    for p in &opts.propagation {
        sys.mount(None, &dest, None, *p, None)?;
    }
    Ok(())
}

/// `/sys/fs/cgroup`: a fresh cgroup2 in a new cgroup namespace on v2, else the container's own
/// cgroup bound from the host; on v1 a tmpfs with one bound directory per hierarchy.
fn mount_cgroup(
    sys: &dyn Syscall,
    dest: &Path,
    opts: &MountOptions,
    o: &RootfsOptions<'_>,
) -> Result<()> {
    let flags = opts.flags
        & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    let bind_ro = |sys: &dyn Syscall, source: &Path, target: &Path| -> Result<()> {
        sys.mkdir_all(target, 0o755)?;
        sys.mount(
            Some(source),
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        sys.mount(
            None,
            target,
            None,
            flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
            None,
        )
    };
    match o.cgroups {
        CgroupMounts::None => Ok(()),
        CgroupMounts::V2 { host_dir } => {
            if o.cgroup_ns {
                sys.mkdir_all(dest, 0o755)?;
                sys.mount(
                    Some(Path::new("cgroup2")),
                    dest,
                    Some("cgroup2"),
                    flags,
                    None,
                )
            } else {
                bind_ro(sys, host_dir, dest)
            }
        }
        CgroupMounts::V1 { dirs } => {
            sys.mkdir_all(dest, 0o755)?;
            let tmpfs_flags = flags - MsFlags::MS_RDONLY;
            sys.mount(
                Some(Path::new("tmpfs")),
                dest,
                Some("tmpfs"),
                tmpfs_flags,
                Some("mode=755"),
            )?;
            for (name, host_dir) in dirs {
                bind_ro(sys, host_dir, &dest.join(name))?;
                // `cpu,cpuacct` is also reachable as `cpu` and `cpuacct`, as on the host.
                if name.contains(',') {
                    for part in name.split(',') {
                        sys.symlink(Path::new(name), &dest.join(part))?;
                    }
                }
            }
            if flags.contains(MsFlags::MS_RDONLY) {
                sys.mount(
                    None,
                    dest,
                    None,
                    tmpfs_flags | MsFlags::MS_RDONLY | MsFlags::MS_REMOUNT,
                    None,
                )?;
            }
            Ok(())
        }
    }
}

fn make_devices(sys: &dyn Syscall, spec: &Spec, o: &RootfsOptions<'_>) -> Result<()> {
    let dev = o.rootfs.join("dev");
    let mut made: Vec<PathBuf> = Vec::new();
    let spec_devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for d in spec_devices {
        // `/dev/ptmx` is always the link to the container's own devpts (made after the nodes),
        // never the host's multiplexer, even when a privileged spec lists every host device.
        if d.path() == Path::new("/dev/ptmx") {
            continue;
        }
        let path = secure_join(o.rootfs, d.path())?;
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::Spec(format!(
                    "device {} has type \"a\", which only cgroup rules may use",
                    d.path().display()
                )))
            }
        };
        let perm = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666));
        make_device(
            sys,
            &path,
            (kind, perm),
            (d.major() as u64, d.minor() as u64),
            o.user_ns,
        )?;
        if d.uid().is_some() || d.gid().is_some() {
            sys.chown(&path, d.uid(), d.gid())?;
        }
        made.push(path);
    }
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = dev.join(name);
        if made.contains(&path) {
            continue;
        }
        make_device(
            sys,
            &path,
            (SFlag::S_IFCHR, Mode::from_bits_truncate(0o666)),
            (major, minor),
            o.user_ns,
        )?;
    }
    Ok(())
}

fn make_device(
    sys: &dyn Syscall,
    path: &Path,
    (kind, perm): (SFlag, Mode),
    (major, minor): (u64, u64),
    user_ns: bool,
) -> Result<()> {
    if let Some(parent) = path.parent() {
        sys.mkdir_all(parent, 0o755)?;
    }
    if user_ns {
        // mknod is refused in a user namespace: bind the host's node instead.
        let host = Path::new("/dev").join(path.file_name().unwrap_or_default());
        sys.create_file(path)?;
        return sys.mount(Some(&host), path, None, MsFlags::MS_BIND, None);
    }
    // SAFETY: makedev is pure arithmetic.
    let dev = libc::makedev(major as u32, minor as u32);
    // The umask must not strip the modes the spec asked for.
    let old = nix::sys::stat::umask(Mode::empty());
    let made = sys.mknod(path, kind, perm, dev);
    nix::sys::stat::umask(old);
    match made {
        Err(Error::Path {
            source: nix::Error::EEXIST,
            ..
        }) => Ok(()),
        other => other,
    }
}

fn dev_symlinks(sys: &dyn Syscall, rootfs: &Path) -> Result<()> {
    let dev = rootfs.join("dev");
    if !dev.is_dir() {
        return Ok(());
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        sys.symlink(Path::new(target), &dev.join(link))?;
    }
    if Path::new("/proc/kcore").exists() {
        sys.symlink(Path::new("/proc/kcore"), &dev.join("core"))?;
    }
    if dev.join("pts").is_dir() {
        sys.symlink(Path::new("pts/ptmx"), &dev.join("ptmx"))?;
    }
    Ok(())
}

/// Makes `rootfs` the root: `pivot_root(".", ".")` stacks the old root on the new one, which is
/// then detached (made a slave first so the detach does not propagate to the host).
pub fn pivot(sys: &dyn Syscall, rootfs: &Path) -> Result<()> {
    sys.chdir(rootfs)?;
    sys.pivot_root(Path::new("."), Path::new("."))?;
    sys.mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)?;
    sys.chdir(Path::new("/"))
}

/// After `pivot_root`: masked paths, read-only paths, a read-only root and the root's final
/// propagation.
pub fn finish(sys: &dyn Syscall, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let root = Path::new("/");
    for p in linux
        .and_then(|l| l.masked_paths().as_deref())
        .unwrap_or_default()
    {
        let path = secure_join(root, Path::new(p))?;
        match std::fs::metadata(&path) {
            Err(_) => continue,
            Ok(m) if m.is_dir() => sys.mount(
                Some(Path::new("tmpfs")),
                &path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?,
            Ok(_) => sys.mount(
                Some(Path::new("/dev/null")),
                &path,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
        }
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_deref())
        .unwrap_or_default()
    {
        let path = secure_join(root, Path::new(p))?;
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        sys.mount(
            Some(&path),
            &path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        sys.mount(
            None,
            &path,
            None,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_REC,
            None,
        )?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        sys.mount(
            None,
            root,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    if let Some(p) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        if let Some(flag) = propagation_flag(p) {
            sys.mount(None, root, None, flag, None)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::Recorder;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn options_parse_like_mount8() {
        let o = MountOptions::parse(&[
            "nosuid".into(),
            "strictatime".into(),
            "mode=755".into(),
            "size=65536k".into(),
            "rprivate".into(),
            "ro".into(),
            "rw".into(),
        ]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
    }

    #[test]
    fn mounts_happen_in_spec_order_then_devices_then_pivot() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        let src = dir.path().join("data");
        std::fs::create_dir_all(&src).unwrap();
        // A hostile symlink in the image must not redirect a mount outside the rootfs.
        std::os::unix::fs::symlink("/", rootfs.join("mnt")).unwrap();
        let s = spec(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},
            "mounts":[
              {{"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]}},
              {{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]}},
              {{"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]}},
              {{"destination":"/mnt/data","type":"bind","source":"{}","options":["rbind","ro","rprivate"]}},
              {{"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["ro","nosuid","noexec","nodev"]}}
            ],
            "linux":{{"devices":[{{"path":"/dev/fuse","type":"c","major":10,"minor":229,"fileMode":438,"uid":0,"gid":0}},
              {{"path":"/dev/ptmx","type":"c","major":5,"minor":2,"fileMode":438}}]}}}}"#,
            src.display()
        ));
        let sys = Recorder::new();
        let cg = CgroupMounts::V1 {
            dirs: vec![(
                "cpu,cpuacct".into(),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/berth/c1"),
            )],
        };
        let o = RootfsOptions {
            rootfs: &rootfs,
            cgroups: &cg,
            cgroup_ns: false,
            user_ns: false,
        };
        prepare(&sys, &s, &o).unwrap();
        pivot(&sys, &rootfs).unwrap();
        let r = rootfs.display().to_string();
        let calls: Vec<String> = sys.calls().iter().map(|c| c.replace(&r, "R")).collect();
        let expected_prefix = [
            "mount none -> / (-) MS_REC | MS_SLAVE".to_owned(),
            "mount R -> R (-) MS_BIND | MS_REC".to_owned(),
            "mount proc -> R/proc (proc) MS_NOSUID | MS_NODEV | MS_NOEXEC".to_owned(),
            "mount tmpfs -> R/dev (tmpfs) MS_NOSUID | MS_STRICTATIME [mode=755,size=65536k]".to_owned(),
            "mount devpts -> R/dev/pts (devpts) MS_NOSUID | MS_NOEXEC [newinstance,ptmxmode=0666,mode=0620,gid=5]".to_owned(),
            format!("mount {} -> R/data (-) MS_BIND | MS_REC", src.display()),
            "mount none -> R/data (-) MS_RDONLY | MS_REMOUNT | MS_BIND".to_owned(),
            "mount none -> R/data (-) MS_REC | MS_PRIVATE".to_owned(),
            "mount tmpfs -> R/sys/fs/cgroup (tmpfs) MS_NOSUID | MS_NODEV | MS_NOEXEC [mode=755]".to_owned(),
            "mount /sys/fs/cgroup/cpu,cpuacct/berth/c1 -> R/sys/fs/cgroup/cpu,cpuacct (-) MS_BIND | MS_REC".to_owned(),
        ];
        assert_eq!(
            calls[..expected_prefix.len()],
            expected_prefix,
            "{calls:#?}"
        );
        let rest = calls[expected_prefix.len()..].join("\n");
        for want in [
            "symlink R/sys/fs/cgroup/cpu -> cpu,cpuacct",
            "mknod R/dev/fuse S_IFCHR 666 10:229",
            "mknod R/dev/null S_IFCHR 666 1:3",
            "mknod R/dev/tty S_IFCHR 666 5:0",
            "symlink R/dev/fd -> /proc/self/fd",
            "symlink R/dev/ptmx -> pts/ptmx",
            "pivot_root . .",
            "umount . MNT_DETACH",
        ] {
            assert!(rest.contains(want), "{want:?} missing from\n{rest}");
        }
        // A privileged spec lists the host's /dev/ptmx: the container gets the link to its own
        // devpts all the same, as with runc.
        assert!(!rest.contains("mknod R/dev/ptmx"), "{rest}");
        // The hostile /mnt -> / resolved inside the rootfs: the mount point was made there.
        assert!(rootfs.join("data").is_dir());
        assert!(rest.find("pivot_root").unwrap() > rest.find("mknod R/dev/null").unwrap());
    }

    #[test]
    fn user_namespaces_bind_devices_instead_of_mknod() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().to_owned();
        let s = spec(
            r#"{"ociVersion":"1.0.2","mounts":[{"destination":"/dev","type":"tmpfs","source":"tmpfs"}]}"#,
        );
        let sys = Recorder::new();
        let o = RootfsOptions {
            rootfs: &rootfs,
            cgroups: &CgroupMounts::None,
            cgroup_ns: false,
            user_ns: true,
        };
        prepare(&sys, &s, &o).unwrap();
        let calls = sys.calls().join("\n");
        assert!(!calls.contains("mknod"), "{calls}");
        assert!(calls.contains("mount /dev/null ->"), "{calls}");
    }

    #[test]
    fn bad_root_propagation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(r#"{"ociVersion":"1.0.2","linux":{"rootfsPropagation":"sideways"}}"#);
        let o = RootfsOptions {
            rootfs: dir.path(),
            cgroups: &CgroupMounts::None,
            cgroup_ns: false,
            user_ns: false,
        };
        let err = prepare(&Recorder::new(), &s, &o).unwrap_err();
        assert!(err.to_string().contains("sideways"), "{err}");
    }
}
