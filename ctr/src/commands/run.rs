//! `bctr run` and `bctr containers create`: a container made as containerd 1.6's client makes one
//! for `ctr run` — the image unpacked if its snapshot is missing, a writable snapshot keyed by the
//! container id on the image's chain ID, the runtime spec from containerd's defaults, the image
//! config and the flags, the record created under a temporary lease — and then, for `run`, its
//! task: FIFOs for stdio, Wait before Start, signals forwarded, the task's exit status as ours.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bctr::oci;
use bctr::seccomp;
use bctr::spec::{self, ImageRunConfig};
use berth_api::containers::{
    container::Runtime, containers_client::ContainersClient, Container, CreateContainerRequest,
    DeleteContainerRequest,
};
use berth_api::images::{images_client::ImagesClient, GetImageRequest};
use berth_api::snapshots::{
    snapshots_client::SnapshotsClient, CommitSnapshotRequest, MountsRequest,
    PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use berth_api::tasks::{
    tasks_client::TasksClient, CreateTaskRequest, DeleteTaskRequest, StartRequest, WaitRequest,
};
use berth_mount::{Mount, TempMount};
use berth_oci::{platform, Matcher};
use clap::Args;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, LinuxSeccomp, Spec};
use tonic::Code;

use super::stdio::{self, Fifos, Io, RawTerminal};
use super::store::{self, ContentStore};
use super::{images, label_args, leases, CmdError, Ctx};

/// containerd's default runtime.
pub const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";
/// The type URL of runc's runtime options, which ctr sends (empty) for `io.containerd.runc.v2`.
const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";
/// The container label holding the signal that stops it (the image's `StopSignal`).
pub const STOP_SIGNAL_LABEL: &str = "io.containerd.image.config.stop-signal";

/// ctr's container flags (`commands.ContainerFlags` and the Linux ones), shared by `run` and
/// `containers create`. `--user`, `--hostname` and `--pids-limit` are bctr's own.
#[derive(Args, Debug, Clone)]
pub struct ContainerFlags {
    /// Snapshotter name; empty means the namespace's default (overlayfs).
    #[arg(
        long,
        env = "CONTAINERD_SNAPSHOTTER",
        default_value = "",
        hide_default_value = true
    )]
    pub snapshotter: String,
    /// Labels added to the new snapshot for this container.
    #[arg(long = "snapshotter-label")]
    pub snapshotter_label: Vec<String>,
    /// Working directory of the process.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Additional environment variables (FOO=bar; FOO alone removes it).
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// A file of environment variables, one FOO=bar a line.
    #[arg(long = "env-file")]
    pub env_file: Option<PathBuf>,
    /// Additional labels (foo=bar), also set as annotations of the spec.
    #[arg(long)]
    pub label: Vec<String>,
    /// Additional OCI annotations (foo=bar).
    #[arg(long)]
    pub annotation: Vec<String>,
    /// Additional mount, e.g. type=bind,src=/tmp,dst=/host,options=rbind:ro.
    #[arg(long)]
    pub mount: Vec<String>,
    /// Use the host's network namespace.
    #[arg(long = "net-host")]
    pub net_host: bool,
    /// Run privileged: all the caller's capabilities, every host device, no masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// Make the container's root file system read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Runtime name.
    #[arg(long, default_value = DEFAULT_RUNTIME)]
    pub runtime: String,
    /// Allocate a TTY for the container.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Turn off the spec's NoNewPrivileges.
    #[arg(long = "allow-new-privs")]
    pub allow_new_privs: bool,
    /// Memory limit in bytes.
    #[arg(long = "memory-limit")]
    pub memory_limit: Option<u64>,
    /// CFS CPU quota as a number of CPUs (e.g. 0.5).
    #[arg(long, default_value_t = 0.0)]
    pub cpus: f64,
    /// CPU shares (`run` sets 1024 when not given, as ctr run; `containers create` none, as ctr
    /// containers create, which has no such flag).
    #[arg(long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CFS CPU quota in microseconds (-1: none).
    #[arg(long = "cpu-quota", default_value_t = -1, allow_hyphen_values = true)]
    pub cpu_quota: i64,
    /// CFS CPU period in microseconds.
    #[arg(long = "cpu-period", default_value_t = 0)]
    pub cpu_period: u64,
    /// Maximum number of processes (bctr's; ctr 1.6 has no such flag).
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// User of the process: user, uid, user:group or uid:gid (bctr's; ctr 1.6 has none).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Hostname of the container (bctr's; ctr 1.6 has none).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Cgroup path (empty to not use one); default /<namespace>/<id>.
    #[arg(long)]
    pub cgroup: Option<String>,
    /// Enable the default seccomp profile (containerd's, for the container's capabilities).
    #[arg(long)]
    pub seccomp: bool,
    /// A seccomp profile file (JSON, the spec's linux.seccomp) instead of the default; needs
    /// --seccomp.
    #[arg(long = "seccomp-profile")]
    pub seccomp_profile: Option<PathBuf>,
    /// Run the image for this platform.
    #[arg(long)]
    pub platform: Option<String>,
    /// Add a capability (CAP_NAME) to the bounding, effective and permitted sets.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop a capability (CAP_NAME) from the bounding, effective and permitted sets.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// A host device node, or a directory of them, to add to the container (rwm).
    #[arg(long)]
    pub device: Vec<String>,
    /// Join an existing Linux namespace: <nstype>:<path>, e.g. network:/proc/1234/ns/net.
    #[arg(long = "with-ns")]
    pub with_ns: Vec<String>,
    /// The propagation of the container's root mount (shared, slave, private, …).
    #[arg(long = "rootfs-propagation")]
    pub rootfs_propagation: Option<String>,
    /// Run in a user namespace with this UID mapping (container-uid:host-uid:length; needs
    /// --gidmap). The image's files are copied up once, shifted to the host ids.
    #[arg(long, value_name = "container-uid:host-uid:length")]
    pub uidmap: Option<String>,
    /// The user namespace's GID mapping (container-gid:host-gid:length; needs --uidmap).
    #[arg(long, value_name = "container-gid:host-gid:length")]
    pub gidmap: Option<String>,
    /// Give the mappings to the snapshotter as labels (for one that shifts ownership itself,
    /// such as fuse-overlayfs) instead of shifting the files.
    #[arg(long = "remap-labels")]
    pub remap_labels: bool,
}

/// ctr's `parseIDMapping`: `container-id:host-id:size`, with its messages.
fn parse_id_mapping(arg: &str) -> Result<LinuxIdMapping, CmdError> {
    let parts: Vec<&str> = arg.split(':').collect();
    let [c, h, n] = parts[..] else {
        return Err(usage(
            "user namespace mappings require the format `container-id:host-id:size`",
        ));
    };
    let num = |v: &str, what: &str| {
        v.parse::<u32>().map_err(|e| {
            usage(format!(
                "invalid {what} for user namespace remapping: strconv.ParseUint: parsing {v:?}: {e}"
            ))
        })
    };
    oci_spec::runtime::LinuxIdMappingBuilder::default()
        .container_id(num(c, "container id")?)
        .host_id(num(h, "host id")?)
        .size(num(n, "size")?)
        .build()
        .map_err(|e| usage(e.to_string()))
}

/// The user namespace mappings, when both `--uidmap` and `--gidmap` are given (as ctr, which
/// ignores one alone).
fn id_mappings(f: &ContainerFlags) -> Result<Option<(LinuxIdMapping, LinuxIdMapping)>, CmdError> {
    match (
        f.uidmap.as_deref().filter(|m| !m.is_empty()),
        f.gidmap.as_deref().filter(|m| !m.is_empty()),
    ) {
        (Some(u), Some(g)) => Ok(Some((parse_id_mapping(u)?, parse_id_mapping(g)?))),
        _ => Ok(None),
    }
}

/// Which image, which container, which command.
pub struct NewContainer<'a> {
    pub image: &'a str,
    pub id: &'a str,
    pub args: Vec<String>,
    pub flags: &'a ContainerFlags,
}

fn usage(msg: impl Into<String>) -> CmdError {
    CmdError::Usage(msg.into())
}

/// Refuses what bctr cannot do, before anything is made.
fn check_flags(f: &ContainerFlags) -> Result<(), CmdError> {
    if !f.seccomp && seccomp_profile(f).is_some() {
        return Err(usage(
            "seccomp must be set to true, if using a custom seccomp-profile",
        ));
    }
    if (f.cpu_quota != -1 || f.cpu_period != 0) && f.cpus > 0.0 {
        return Err(usage("cpus and quota/period should be used separately"));
    }
    for a in &f.annotation {
        if !a.contains('=') {
            return Err(usage(format!("invalid key=value format annotation: {a}")));
        }
    }
    if f.cap_add
        .iter()
        .chain(&f.cap_drop)
        .any(|c| !c.starts_with("CAP_"))
    {
        return Err(usage("capabilities must be specified with 'CAP_' prefix"));
    }
    for ns in &f.with_ns {
        namespace_to_join(ns)?;
    }
    id_mappings(f)?;
    Ok(())
}

/// A `--with-ns` value: `<nstype>:<path>`, with ctr's messages.
fn namespace_to_join(arg: &str) -> Result<(LinuxNamespaceType, PathBuf), CmdError> {
    let parts: Vec<&str> = arg.split(':').collect();
    let [typ, path] = parts[..] else {
        return Err(usage(
            "joining a Linux namespace using --with-ns requires the format 'nstype:path'",
        ));
    };
    let typ = match typ {
        "pid" => LinuxNamespaceType::Pid,
        "network" => LinuxNamespaceType::Network,
        "uts" => LinuxNamespaceType::Uts,
        "mount" => LinuxNamespaceType::Mount,
        "user" => LinuxNamespaceType::User,
        "ipc" => LinuxNamespaceType::Ipc,
        "cgroup" => LinuxNamespaceType::Cgroup,
        other => {
            return Err(usage(format!(
                "the Linux namespace type specified in --with-ns is not valid: {other}"
            )))
        }
    };
    Ok((typ, PathBuf::from(path)))
}

/// containerd's `getDevices` for `--device`: the node at `path`, or the nodes under a directory
/// (skipping what `HostDevices` skips).
fn devices_at(path: &Path) -> Result<Vec<serde_json::Value>, CmdError> {
    let md = std::fs::metadata(path).map_err(|e| {
        CmdError::Failed(format!(
            "error stating device path: stat {}: {}",
            path.display(),
            lower_first(&e)
        ))
    })?;
    if md.is_dir() {
        let mut out = Vec::new();
        walk_devices(path, &mut out);
        return Ok(out);
    }
    device_node(path)
        .map(|d| vec![d])
        .ok_or_else(|| CmdError::Failed("not a device node".into()))
}

/// Go's error text for an io error: its description, lower-cased.
fn lower_first(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The `--seccomp-profile` file; an empty value is no file, as for ctr.
fn seccomp_profile(f: &ContainerFlags) -> Option<&Path> {
    f.seccomp_profile
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty())
}

/// containerd's `tryReadonlyMounts`: the snapshot's mounts made read-only, for reading the
/// container's /etc/passwd and /etc/group.
fn readonly_mounts(mounts: Vec<Mount>) -> Vec<Mount> {
    mounts
        .into_iter()
        .map(|mut m| {
            if let Some(mut o) = m.overlay_options() {
                if let Some(upper) = o.upperdir.take() {
                    o.lowerdirs.insert(0, upper);
                }
                o.workdir = None;
                if !o.other.iter().any(|x| x == "ro") {
                    o.other.push("ro".to_owned());
                }
                m.options = o.to_options();
            } else if m.mount_type == "bind" && !m.is_readonly() {
                m.options.push("ro".to_owned());
            }
            m
        })
        .collect()
}

fn to_mount(m: berth_api::types::Mount) -> Mount {
    Mount {
        mount_type: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

/// The character and block devices under /dev, as containerd's `HostDevices` lists them.
fn host_devices() -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    walk_devices(Path::new("/dev"), &mut out);
    out
}

/// The character and block device nodes under `dir`, recursively, but the directories and the
/// console containerd skips, in containerd's order.
fn walk_devices(dir: &Path, out: &mut Vec<serde_json::Value>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    // By name, as Go's os.ReadDir lists them: the spec's device order is containerd's.
    let mut entries: Vec<std::fs::DirEntry> = entries.flatten().collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if is_dir {
            if !matches!(
                name.as_ref(),
                "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev"
            ) {
                walk_devices(&path, out);
            }
        } else if name != "console" {
            out.extend(device_node(&path).filter(|d| d["type"] != "p"));
        }
    }
}

/// containerd's `DeviceFromPath`: the node at `path` (not followed if a link) as a spec device,
/// `None` if it is not a device node.
fn device_node(path: &Path) -> Option<serde_json::Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::symlink_metadata(path).ok()?;
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else if ft.is_fifo() {
        "p"
    } else {
        return None;
    };
    let rdev = md.rdev();
    Some(serde_json::json!({
        "path": path.display().to_string(),
        "type": typ,
        "major": nix::sys::stat::major(rdev),
        "minor": nix::sys::stat::minor(rdev),
        "fileMode": md.mode() & 0o7777,
        "uid": md.uid(),
        "gid": md.gid(),
    }))
}

/// The effective capabilities of this process (`CapEff` in /proc/self/status).
fn current_capabilities() -> Result<Vec<String>, CmdError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| CmdError::Failed(format!("cannot read /proc/self/status: {e}")))?;
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| CmdError::Failed("no CapEff in /proc/self/status".into()))?;
    Ok(spec::capabilities_from_mask(mask))
}

/// The spec of a new container, in ctr's order of options. Mounts `rootfs` (the container's
/// snapshot) for a moment to resolve users and groups, so it runs on a blocking thread.
fn build_spec(
    namespace: &str,
    new: &NewContainerOwned,
    image: &ImageRunConfig,
    rootfs: Vec<Mount>,
) -> Result<Spec, CmdError> {
    let f = &new.flags;
    let specerr = |e: spec::SpecError| CmdError::Failed(e.to_string());
    let mut s = spec::default_spec(namespace, &new.id);
    if let Some(path) = &f.env_file {
        let vars = spec::read_env_file(path).map_err(specerr)?;
        spec::with_env(&mut s, &vars);
    }
    spec::with_env(&mut s, &f.env);
    let mounts = f
        .mount
        .iter()
        .map(|m| spec::parse_mount_flag(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(specerr)?;
    spec::with_mounts(&mut s, mounts);
    {
        let tmp = TempMount::new(&readonly_mounts(rootfs)).map_err(|e| {
            CmdError::Failed(format!("failed to mount the container's rootfs: {e}"))
        })?;
        spec::with_image_config(&mut s, image, tmp.path()).map_err(specerr)?;
        if let Some(user) = &f.user {
            spec::with_user(&mut s, user, tmp.path()).map_err(specerr)?;
            let uid = s
                .process()
                .as_ref()
                .map(|p| p.user().uid())
                .unwrap_or_default();
            spec::with_additional_gids(&mut s, &uid.to_string(), tmp.path()).map_err(specerr)?;
        }
    }
    if let Some((uid, gid)) = id_mappings(f)? {
        spec::with_user_namespace(&mut s, uid, gid);
    }
    if f.read_only {
        spec::with_readonly_rootfs(&mut s);
    }
    if !new.args.is_empty() {
        spec::with_process_args(&mut s, new.args.clone());
    }
    if let Some(cwd) = &f.cwd {
        spec::with_cwd(&mut s, cwd);
    }
    if f.tty {
        spec::with_tty(&mut s);
    }
    if f.privileged {
        spec::with_privileged(&mut s, &current_capabilities()?, host_devices());
    }
    if f.net_host {
        let host = nix::unistd::gethostname()
            .map_err(|e| CmdError::Failed(format!("get hostname: {e}")))?;
        spec::with_host_network(&mut s, &host.to_string_lossy());
    }
    if !f.annotation.is_empty() {
        let annotations: Vec<(String, String)> = f
            .annotation
            .iter()
            .filter_map(|a| a.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        spec::with_annotations(&mut s, &annotations);
    }
    if !f.cap_add.is_empty() {
        spec::with_added_capabilities(&mut s, &f.cap_add);
    }
    if !f.cap_drop.is_empty() {
        spec::with_dropped_capabilities(&mut s, &f.cap_drop);
    }
    // After --privileged and the capability flags, as in ctr: the default profile depends on
    // the capabilities.
    if f.seccomp {
        match &new.seccomp_profile {
            Some(profile) => spec::with_seccomp(&mut s, profile.clone()),
            None => spec::with_default_seccomp(&mut s, &seccomp::Host::current()),
        }
    }
    if f.cpus > 0.0 {
        spec::with_cpu_cfs(&mut s, (f.cpus * 100_000.0) as i64, 100_000);
    }
    if let Some(shares) = f.cpu_shares.filter(|s| *s > 0) {
        spec::with_cpu_shares(&mut s, shares);
    }
    if f.cpu_quota != -1 || f.cpu_period != 0 {
        spec::with_cpu_cfs(&mut s, f.cpu_quota, f.cpu_period);
    }
    for ns in &f.with_ns {
        let (typ, path) = namespace_to_join(ns)?;
        spec::with_linux_namespace(&mut s, typ, &path);
    }
    if f.allow_new_privs {
        spec::with_new_privileges(&mut s);
    }
    if let Some(cg) = &f.cgroup {
        spec::with_cgroup(&mut s, cg);
    }
    if let Some(limit) = f.memory_limit.filter(|l| *l != 0) {
        spec::with_memory_limit(&mut s, limit);
    }
    for dev in &f.device {
        spec::with_devices(&mut s, devices_at(Path::new(dev))?, "rwm");
    }
    if let Some(p) = f.rootfs_propagation.as_deref().filter(|p| !p.is_empty()) {
        spec::with_rootfs_propagation(&mut s, p);
    }
    if let Some(limit) = f.pids_limit {
        spec::with_pids_limit(&mut s, limit);
    }
    if let Some(h) = &f.hostname {
        spec::with_hostname(&mut s, h);
    }
    spec::with_annotations(&mut s, &label_args(&f.label));
    Ok(s)
}

/// What `build_spec` needs, owned, to move onto a blocking thread.
struct NewContainerOwned {
    id: String,
    args: Vec<String>,
    flags: ContainerFlags,
    /// The `--seccomp-profile` file's profile, read before anything was made.
    seccomp_profile: Option<LinuxSeccomp>,
}

/// Reads the `--seccomp-profile` file (if any) on a blocking thread. ctr reads it while building
/// the spec, after the snapshot is prepared; bctr reads it first, so a bad file leaves nothing
/// behind — the error is the same.
async fn read_seccomp_profile(f: &ContainerFlags) -> Result<Option<LinuxSeccomp>, CmdError> {
    let Some(path) = seccomp_profile(f).map(Path::to_owned) else {
        return Ok(None);
    };
    tokio::task::spawn_blocking(move || seccomp::load_profile(&path))
        .await
        .map_err(|e| CmdError::Failed(format!("reading the seccomp profile failed: {e}")))?
        .map(Some)
        .map_err(|e| CmdError::Failed(e.to_string()))
}

/// containerd's `WithRemappedSnapshot`: the container's snapshot on a copy of the image's whose
/// files belong to the user namespace's host ids (`<chain>-<uid>-<gid>`, made once and shared
/// by every container with the same mapping).
async fn remapped_snapshot(
    ctx: &Ctx,
    snapshotter: &str,
    id: &str,
    chain: &str,
    uid: u32,
    gid: u32,
) -> Result<Vec<berth_api::types::Mount>, CmdError> {
    let mut sn = SnapshotsClient::new(ctx.channel.clone());
    let userns_id = format!("{chain}-{uid}-{gid}");
    let prepare = |key: String, parent: String| PrepareSnapshotRequest {
        snapshotter: snapshotter.to_owned(),
        key,
        parent,
        labels: HashMap::new(),
    };
    let have_base = match sn
        .stat(ctx.request(StatSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: userns_id.clone(),
        }))
        .await
    {
        Ok(_) => true,
        Err(s) if s.code() == Code::NotFound => false,
        Err(s) => return Err(s.into()),
    };
    if !have_base {
        let work = format!("{userns_id}-remap");
        let mounts = sn
            .prepare(ctx.request(prepare(work.clone(), chain.to_owned())))
            .await?
            .into_inner()
            .mounts;
        let rootfs: Vec<Mount> = mounts.into_iter().map(to_mount).collect();
        let shifted = tokio::task::spawn_blocking(move || shift_ownership(&rootfs, uid, gid))
            .await
            .map_err(|e| CmdError::Failed(format!("remapping the snapshot failed: {e}")))?;
        if let Err(e) = shifted {
            let _ = sn
                .remove(ctx.request(RemoveSnapshotRequest {
                    snapshotter: snapshotter.to_owned(),
                    key: work,
                }))
                .await;
            return Err(e);
        }
        sn.commit(ctx.request(CommitSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            name: userns_id.clone(),
            key: work,
            labels: HashMap::new(),
            parent: String::new(),
        }))
        .await?;
    }
    Ok(sn
        .prepare(ctx.request(prepare(id.to_owned(), userns_id)))
        .await?
        .into_inner()
        .mounts)
}

/// containerd's `remapRootFS`: every file of the mounted snapshot (links themselves, not what
/// they point to) shifted by `uid`/`gid`.
fn shift_ownership(rootfs: &[Mount], uid: u32, gid: u32) -> Result<(), CmdError> {
    use std::os::unix::fs::MetadataExt;
    fn walk(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        let md = std::fs::symlink_metadata(path)?;
        std::os::unix::fs::lchown(
            path,
            Some(md.uid().wrapping_add(uid)),
            Some(md.gid().wrapping_add(gid)),
        )?;
        if md.is_dir() {
            for e in std::fs::read_dir(path)? {
                walk(&e?.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    let tmp = TempMount::new(rootfs)
        .map_err(|e| CmdError::Failed(format!("failed to mount the snapshot to remap: {e}")))?;
    walk(tmp.path(), uid, gid)
        .map_err(|e| CmdError::Failed(format!("remap the snapshot's ownership: {e}")))
}

/// Creates the container (and its snapshot) as `ctr run` / `ctr containers create` do.
pub async fn new_container(ctx: &Ctx, new: NewContainer<'_>) -> Result<Container, CmdError> {
    check_flags(new.flags)?;
    let seccomp_profile = read_seccomp_profile(new.flags).await?;
    let img = ImagesClient::new(ctx.channel.clone())
        .get(ctx.request(GetImageRequest {
            name: new.image.to_owned(),
        }))
        .await?
        .into_inner()
        .image
        .unwrap_or_default();
    let target = images::image_target(&img)?;
    let platform = match &new.flags.platform {
        Some(p) => platform::parse(p).map_err(|e| usage(e.to_string()))?,
        None => berth_oci::host_platform(),
    };
    let matcher = Matcher::only(&platform);
    let snapshotter = images::resolve_snapshotter(ctx, &new.flags.snapshotter).await?;

    // containerd's client creates a container under a lease, so nothing it makes is collected
    // before the record that holds it exists.
    let lease = leases::create_temporary(ctx).await?;
    let leased = ctx.with_lease(&lease);
    let result = create_leased(
        &leased,
        &new,
        seccomp_profile,
        &img,
        &target,
        &matcher,
        &snapshotter,
    )
    .await;
    let cleanup = leases::delete_temporary(ctx, &lease).await;
    let container = result?;
    cleanup?;
    Ok(container)
}

async fn create_leased(
    ctx: &Ctx,
    new: &NewContainer<'_>,
    seccomp_profile: Option<LinuxSeccomp>,
    img: &berth_api::images::Image,
    target: &oci::Descriptor,
    matcher: &Matcher,
    snapshotter: &str,
) -> Result<Container, CmdError> {
    let mut cs = ContentStore::new(ctx);
    let manifest = store::resolve_manifest(&mut cs, target, Some(matcher)).await?;
    let config = cs.read_config(manifest.config()).await?;
    let chain = oci::rootfs_chain_id(&config).map_err(CmdError::Failed)?;

    let mut sn = SnapshotsClient::new(ctx.channel.clone());
    let unpacked = match sn
        .stat(ctx.request(StatSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: chain.clone(),
        }))
        .await
    {
        Ok(_) => true,
        Err(s) if s.code() == Code::NotFound => false,
        Err(s) => return Err(s.into()),
    };
    if !unpacked && !chain.is_empty() {
        super::unpack::unpack(ctx, target, matcher, snapshotter).await?;
    }

    let mut snapshot_labels: HashMap<String, String> = label_args(&new.flags.snapshotter_label)
        .into_iter()
        .collect();
    let mounts = match id_mappings(new.flags)? {
        Some((uid, gid)) if !new.flags.remap_labels => {
            remapped_snapshot(
                ctx,
                snapshotter,
                new.id,
                &chain,
                uid.host_id(),
                gid.host_id(),
            )
            .await?
        }
        mappings => {
            // containerd's WithRemapperLabels: the snapshotter shifts the ownership itself.
            if let Some((uid, gid)) = mappings {
                for (key, m) in [("uidmapping", uid), ("gidmapping", gid)] {
                    snapshot_labels.insert(
                        format!("containerd.io/snapshot/{key}"),
                        format!("0:{}:{}", m.host_id(), uid.size()),
                    );
                }
            }
            sn.prepare(ctx.request(PrepareSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: new.id.to_owned(),
                parent: chain,
                labels: snapshot_labels,
            }))
            .await?
            .into_inner()
            .mounts
        }
    };

    let image_run = ImageRunConfig::from_image(&config);
    let owned = NewContainerOwned {
        id: new.id.to_owned(),
        args: new.args.clone(),
        flags: new.flags.clone(),
        seccomp_profile,
    };
    let namespace = ctx.namespace.clone();
    let rootfs: Vec<Mount> = mounts.into_iter().map(to_mount).collect();
    let spec =
        tokio::task::spawn_blocking(move || build_spec(&namespace, &owned, &image_run, rootfs))
            .await
            .map_err(|e| CmdError::Failed(format!("building the spec failed: {e}")))??;
    let spec_json = spec::to_json(&spec).map_err(|e| CmdError::Failed(e.to_string()))?;

    // Labels: the image config's, the image's (valid ones), the command line's, the stop signal.
    let run_config = config.config().clone().unwrap_or_default();
    let mut labels: HashMap<String, String> = run_config.labels().clone().unwrap_or_default();
    for (k, v) in &img.labels {
        if k.len() + v.len() <= 4096 {
            labels.insert(k.clone(), v.clone());
        } else {
            eprintln!(
                "bctr: unable to add image label with key {k} to the container: label too long"
            );
        }
    }
    labels.extend(label_args(&new.flags.label));
    let stop = run_config
        .stop_signal()
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "SIGTERM".to_owned());
    labels.insert(STOP_SIGNAL_LABEL.to_owned(), stop);

    let options = (new.flags.runtime == DEFAULT_RUNTIME).then(|| prost_types::Any {
        type_url: RUNC_OPTIONS_TYPE.to_owned(),
        value: Vec::new(),
    });
    let container = Container {
        id: new.id.to_owned(),
        labels,
        image: img.name.clone(),
        runtime: Some(Runtime {
            name: new.flags.runtime.clone(),
            options,
        }),
        spec: Some(prost_types::Any {
            type_url: spec::SPEC_TYPE_URL.to_owned(),
            value: spec_json,
        }),
        snapshotter: snapshotter.to_owned(),
        snapshot_key: new.id.to_owned(),
        ..Container::default()
    };
    let created = ContainersClient::new(ctx.channel.clone())
        .create(ctx.request(CreateContainerRequest {
            container: Some(container),
        }))
        .await?
        .into_inner()
        .container
        .unwrap_or_default();
    Ok(created)
}

/// containerd's `container.Delete(WithSnapshotCleanup)`: the snapshot, then the record.
pub async fn delete_container(
    ctx: &Ctx,
    c: &Container,
    keep_snapshot: bool,
) -> Result<(), CmdError> {
    if !keep_snapshot && !c.snapshot_key.is_empty() {
        match SnapshotsClient::new(ctx.channel.clone())
            .remove(ctx.request(RemoveSnapshotRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(s.into()),
        }
    }
    ContainersClient::new(ctx.channel.clone())
        .delete(ctx.request(DeleteContainerRequest { id: c.id.clone() }))
        .await?;
    Ok(())
}

/// How a task's stdio is set up.
pub struct TaskIo {
    pub terminal: bool,
    /// No stdio at all (`--null-io`).
    pub null_io: bool,
    /// Output to this URI (`binary://…`, `file://…`) instead of FIFOs (`--log-uri`); a terminal
    /// or `--null-io` take precedence, as in ctr.
    pub log_uri: Option<String>,
    pub fifo_dir: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
}

/// ctr's `WritePidFile`: written to a hidden temporary file beside it, then renamed.
fn write_pid_file(path: &Path, pid: u32) -> Result<(), CmdError> {
    let path = std::path::absolute(path)
        .map_err(|e| CmdError::Failed(format!("pid file {}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}"));
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| CmdError::Failed(format!("pid file {}: {e}", path.display())))
}

/// An exit status as bctr's own: the low 8 bits, as a shell sees them.
pub fn exit_with(status: u32) -> Result<(), CmdError> {
    if status == 0 {
        Ok(())
    } else {
        Err(CmdError::Exit(u8::try_from(status).unwrap_or(255)))
    }
}

/// Creates and starts the task of container `c`, then (unless detached) copies its stdio until
/// it exits, deletes it and returns its exit status — ctr's `tasks.NewTask` + the rest of `run`.
pub async fn start_task(ctx: &Ctx, c: &Container, opts: TaskIo) -> Result<(), CmdError> {
    let _raw = if opts.terminal {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let fifo_root = opts
        .fifo_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(stdio::DEFAULT_FIFO_DIR));
    let fifos = if opts.null_io || log_uri(&opts).is_some() {
        Fifos::default()
    } else {
        Fifos::create(&fifo_root, &c.id, opts.terminal)?
    };
    let result = run_task(ctx, c, &opts, &fifos).await;
    if !opts.detach || result.is_err() {
        fifos.remove();
    }
    result
}

/// The `--log-uri` in effect: not with a terminal or `--null-io` (ctr's order).
fn log_uri(opts: &TaskIo) -> Option<&str> {
    opts.log_uri
        .as_deref()
        .filter(|u| !u.is_empty() && !opts.terminal && !opts.null_io)
}

async fn run_task(ctx: &Ctx, c: &Container, opts: &TaskIo, fifos: &Fifos) -> Result<(), CmdError> {
    let mut io = Io::attach(fifos, !opts.detach)?;
    let mut rootfs = Vec::new();
    if !c.snapshot_key.is_empty() {
        if c.snapshotter.is_empty() {
            return Err(CmdError::Failed(
                "unable to resolve rootfs mounts without snapshotter on container: invalid argument".into(),
            ));
        }
        rootfs = SnapshotsClient::new(ctx.channel.clone())
            .mounts(ctx.request(MountsRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            }))
            .await?
            .into_inner()
            .mounts;
    }
    let mut tasks = TasksClient::new(ctx.channel.clone());
    let created = tasks
        .create(ctx.request(CreateTaskRequest {
            container_id: c.id.clone(),
            rootfs,
            stdin: fifos.stdin.clone(),
            // containerd's cio.LogURI: both outputs to the URI, no stdin.
            stdout: log_uri(opts).map_or_else(|| fifos.stdout.clone(), str::to_owned),
            stderr: log_uri(opts).map_or_else(|| fifos.stderr.clone(), str::to_owned),
            terminal: fifos.terminal,
            ..CreateTaskRequest::default()
        }))
        .await?
        .into_inner();

    let waiter = (!opts.detach).then(|| {
        let (ctx, id) = (ctx.clone(), c.id.clone());
        tokio::spawn(async move {
            TasksClient::new(ctx.channel.clone())
                .wait(ctx.request(WaitRequest {
                    container_id: id,
                    exec_id: String::new(),
                }))
                .await
        })
    });
    let started = async {
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, created.pid)?;
        }
        tasks
            .start(ctx.request(StartRequest {
                container_id: c.id.clone(),
                exec_id: String::new(),
            }))
            .await?;
        Ok::<(), CmdError>(())
    }
    .await;
    let Some(waiter) = waiter else {
        return started;
    };
    if let Err(e) = started {
        waiter.abort();
        delete_task_quietly(ctx, &c.id).await;
        return Err(e);
    }
    io.release();
    io.close_stdin_on_eof(ctx, &c.id, "");
    let status = stdio::wait_attached(ctx, &c.id, "", opts.terminal, waiter).await;
    let status = match status {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => {
            delete_task_quietly(ctx, &c.id).await;
            return Err(s.into());
        }
        Err(e) => return Err(CmdError::Failed(format!("waiting for the task: {e}"))),
    };
    io.wait().await;
    tasks
        .delete(ctx.request(DeleteTaskRequest {
            container_id: c.id.clone(),
        }))
        .await?;
    exit_with(status.exit_status)
}

async fn delete_task_quietly(ctx: &Ctx, id: &str) {
    let _ = TasksClient::new(ctx.channel.clone())
        .delete(ctx.request(DeleteTaskRequest {
            container_id: id.to_owned(),
        }))
        .await;
}

/// The name of the image to run: `image` when the image store has it, else its normalized
/// reference (`busybox` → `docker.io/library/busybox:latest`), pulled through the daemon's
/// Transfer service if that is not here either — as Docker does, where `ctr run` would fail.
async fn ensure_image(ctx: &Ctx, image: &str, flags: &ContainerFlags) -> Result<String, CmdError> {
    if image_exists(ctx, image).await? {
        return Ok(image.to_owned());
    }
    let reference = bctr::reference::normalize_docker_ref(image).map_err(|e| {
        CmdError::Failed(format!(
            "image \"{image}\": not found locally, and not a reference to pull: {e}"
        ))
    })?;
    if reference != image && image_exists(ctx, &reference).await? {
        return Ok(reference);
    }
    eprintln!("image {image} not found locally: pulling {reference}");
    super::pull::pull(
        ctx,
        super::pull::Pull {
            reference: &reference,
            platform: flags.platform.as_deref(),
            snapshotter: &flags.snapshotter,
            unpack: true,
            plain_http: false,
            user: None,
            display: super::transfer::Display::on_stderr(),
        },
    )
    .await
    .map_err(|e| match e {
        CmdError::Failed(m) => CmdError::Failed(format!(
            "image \"{image}\": not found locally, and the pull failed: {m}"
        )),
        CmdError::Rpc(s) => CmdError::Failed(format!(
            "image \"{image}\": not found locally, and the pull failed: {}",
            s.message()
        )),
        other => other,
    })?;
    Ok(reference)
}

/// Whether the image store has `name` (Images.Get; NotFound is `false`).
async fn image_exists(ctx: &Ctx, name: &str) -> Result<bool, CmdError> {
    match ImagesClient::new(ctx.channel.clone())
        .get(ctx.request(GetImageRequest {
            name: name.to_owned(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(s.into()),
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// Remove the container after running (not with --detach).
    #[arg(long)]
    rm: bool,
    /// Send all IO to /dev/null.
    #[arg(long = "null-io")]
    null_io: bool,
    /// Send the output to this URI (binary:///path/to/logger?k=v, file:///path) instead.
    #[arg(long = "log-uri")]
    log_uri: Option<String>,
    /// Detach from the task after it has started (not with --rm).
    #[arg(long, short = 'd')]
    detach: bool,
    /// Directory for the IO FIFOs.
    #[arg(long = "fifo-dir")]
    fifo_dir: Option<PathBuf>,
    /// Write the task's pid to this file.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[command(flatten)]
    flags: ContainerFlags,
    /// Image reference.
    image: String,
    /// Container id.
    id: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// ctr run's `--cpu-shares` default.
const RUN_CPU_SHARES: u64 = 1024;

pub async fn run(ctx: &Ctx, mut a: RunArgs) -> Result<(), CmdError> {
    a.flags.cpu_shares.get_or_insert(RUN_CPU_SHARES);
    if a.rm && a.detach {
        return Err(usage(
            "flags --detach and --rm cannot be specified together",
        ));
    }
    if a.flags.tty && a.null_io {
        return Err(usage("tty and null-io cannot be used together"));
    }
    let image = ensure_image(ctx, &a.image, &a.flags).await?;
    let container = new_container(
        ctx,
        NewContainer {
            image: &image,
            id: &a.id,
            args: a.command,
            flags: &a.flags,
        },
    )
    .await?;
    let result = start_task(
        ctx,
        &container,
        TaskIo {
            terminal: a.flags.tty,
            null_io: a.null_io,
            log_uri: a.log_uri,
            fifo_dir: a.fifo_dir,
            detach: a.detach,
            pid_file: a.pid_file,
        },
    )
    .await;
    if a.rm {
        if let Err(e) = delete_container(ctx, &container, false).await {
            eprintln!("bctr: failed to remove container {}: {e}", container.id);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_mappings_parse_with_ctrs_messages() {
        let m = parse_id_mapping("0:300000:65536").unwrap();
        assert_eq!(
            (m.container_id(), m.host_id(), m.size()),
            (0, 300000, 65536)
        );
        let e = parse_id_mapping("0:300000").unwrap_err().to_string();
        assert!(
            e.contains("require the format `container-id:host-id:size`"),
            "{e}"
        );
        let e = parse_id_mapping("0:x:1").unwrap_err().to_string();
        assert!(
            e.contains("invalid host id for user namespace remapping"),
            "{e}"
        );
    }

    #[test]
    fn with_ns_takes_ctrs_types() {
        let (t, p) = namespace_to_join("network:/proc/1/ns/net").unwrap();
        assert_eq!(
            (t, p),
            (LinuxNamespaceType::Network, PathBuf::from("/proc/1/ns/net"))
        );
        let e = namespace_to_join("net:/x").unwrap_err().to_string();
        assert!(
            e.contains("the Linux namespace type specified in --with-ns is not valid: net"),
            "{e}"
        );
        let e = namespace_to_join("network").unwrap_err().to_string();
        assert!(e.contains("requires the format 'nstype:path'"), "{e}");
    }
}
