//! The OCI runtime spec of a new container, built as containerd 1.6's client builds it for
//! `ctr run`: containerd's default Unix spec (`oci.populateDefaultUnixSpec`), its default devices,
//! then the image's config (`oci.WithImageConfig`), then each flag's option in ctr's order.
//!
//! Everything here is pure: the caller reads the image config and, for users and groups, mounts the
//! container's root file system and passes its path. The spec is oci-spec's [`Spec`]; it goes to
//! the daemon as JSON in an `Any` of type [`SPEC_TYPE_URL`].

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxNamespaceType, LinuxPids,
    LinuxResources, LinuxSeccomp, Mount, Process, Spec,
};

use crate::seccomp;

/// `typeurl` of a runtime spec, as containerd's client registers it.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// `typeurl` of a process spec (`Tasks.Exec`).
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// containerd's `defaultUnixEnv`, for images that set no environment.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capabilities, in its order (also the order bctr writes them in).
const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Linux capabilities by number (`include/uapi/linux/capability.h`).
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid mount specification: expected key=val")]
    MountKeyVal,
    #[error("mount option {0:?} not supported")]
    MountOption(String),
    #[error("invalid USER value {0}")]
    User(String),
    #[error("no users found")]
    NoUsersFound,
    #[error("no groups found")]
    NoGroupsFound,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid runtime spec: {0}")]
    Json(#[from] serde_json::Error),
    #[error("runtime spec has no {0} section")]
    Missing(&'static str),
}

/// The part of an image's config a container's process is made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRunConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageRunConfig {
    pub fn from_image(config: &berth_oci::ImageConfiguration) -> ImageRunConfig {
        let Some(c) = config.config() else {
            return ImageRunConfig::default();
        };
        ImageRunConfig {
            env: c.env().clone().unwrap_or_default(),
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
        }
    }
}

/// containerd's `populateDefaultUnixSpec` followed by `WithDefaultUnixDevices`: what every
/// `ctr run` container starts from. The cgroup is `/<namespace>/<id>`.
pub fn default_spec(namespace: &str, id: &str) -> Spec {
    let rwm = |t: &str, major: i64, minor: Option<i64>| {
        let mut d = serde_json::json!({"allow": true, "type": t, "major": major, "access": "rwm"});
        if let Some(m) = minor {
            d["minor"] = m.into();
        }
        d
    };
    let mut devices = vec![serde_json::json!({"allow": false, "access": "rwm"})];
    devices.extend([
        rwm("c", 1, Some(3)),
        rwm("c", 1, Some(8)),
        rwm("c", 1, Some(7)),
        rwm("c", 5, Some(0)),
        rwm("c", 1, Some(5)),
        rwm("c", 1, Some(9)),
        rwm("c", 5, Some(1)),
        rwm("c", 136, None),
        rwm("c", 5, Some(2)),
    ]);
    let mount = |dst: &str, typ: &str, src: &str, opts: &[&str]| serde_json::json!({"destination": dst, "type": typ, "source": src, "options": opts});
    let doc = serde_json::json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPS,
                "effective": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs"},
        "mounts": [
            mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
            mount("/dev/pts", "devpts", "devpts",
                &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
            mount("/dev/shm", "tmpfs", "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
            mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
            mount("/run", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        ],
        "linux": {
            "resources": {"devices": devices},
            "cgroupsPath": format!("/{namespace}/{id}"),
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network"},
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    });
    // The document above is a valid spec by construction; its test proves it.
    serde_json::from_value(doc).unwrap_or_default()
}

/// The spec as JSON, for the daemon. Capabilities, which oci-spec keeps in a set, are written in
/// containerd's default order and then by number, so the same spec always gives the same bytes.
pub fn to_json(spec: &Spec) -> Result<Vec<u8>, SpecError> {
    let mut v = serde_json::to_value(spec)?;
    if let Some(caps) = v.pointer_mut("/process/capabilities") {
        order_capabilities(caps);
    }
    Ok(serde_json::to_vec(&v)?)
}

/// A process spec as JSON (`Tasks.Exec`), capabilities ordered as in [`to_json`].
pub fn process_to_json(process: &Process) -> Result<Vec<u8>, SpecError> {
    let mut v = serde_json::to_value(process)?;
    if let Some(caps) = v.get_mut("capabilities") {
        order_capabilities(caps);
    }
    Ok(serde_json::to_vec(&v)?)
}

fn cap_rank(name: &str) -> (usize, usize) {
    match DEFAULT_CAPS.iter().position(|c| *c == name) {
        Some(i) => (0, i),
        None => (
            1,
            CAP_NAMES
                .iter()
                .position(|c| *c == name)
                .unwrap_or(usize::MAX),
        ),
    }
}

fn order_capabilities(caps: &mut serde_json::Value) {
    if let Some(sets) = caps.as_object_mut() {
        for set in sets.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by_key(|c| cap_rank(c.as_str().unwrap_or_default()));
            }
        }
    }
}

fn process_mut(spec: &mut Spec) -> &mut Process {
    spec.process_mut().get_or_insert_with(|| {
        let mut p = Process::default();
        p.set_args(None);
        p.set_env(None);
        p.set_capabilities(None);
        p.set_rlimits(None);
        p.set_terminal(None);
        p.set_console_size(None);
        p
    })
}

fn resources_mut(spec: &mut Spec) -> &mut LinuxResources {
    spec.linux_mut()
        .get_or_insert_with(Default::default)
        .resources_mut()
        .get_or_insert_with(Default::default)
}

fn cpu_mut(spec: &mut Spec) -> &mut LinuxCpu {
    resources_mut(spec)
        .cpu_mut()
        .get_or_insert_with(Default::default)
}

/// containerd's `replaceOrAppendEnvValues`: `overrides` replace the same key in `defaults` or are
/// appended; an override without `=` removes that key.
pub fn replace_or_append_env(defaults: &[String], overrides: &[String]) -> Vec<String> {
    let mut results: Vec<Option<String>> = defaults.iter().cloned().map(Some).collect();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, e) in defaults.iter().enumerate() {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        index.insert(key.to_owned(), i);
    }
    for value in overrides {
        match value.split_once('=') {
            None => {
                if let Some(&i) = index.get(value) {
                    results[i] = None;
                }
            }
            Some((key, _)) => match index.get(key) {
                Some(&i) => results[i] = Some(value.clone()),
                None => {
                    index.insert(key.to_owned(), results.len());
                    results.push(Some(value.clone()));
                }
            },
        }
    }
    results
        .into_iter()
        .flatten()
        .filter(|e| !e.is_empty())
        .collect()
}

/// `oci.WithEnv`.
pub fn with_env(spec: &mut Spec, vars: &[String]) {
    if vars.is_empty() {
        return;
    }
    let p = process_mut(spec);
    let current = p.env().clone().unwrap_or_default();
    p.set_env(Some(replace_or_append_env(&current, vars)));
}

/// The lines of an `--env-file`, as `oci.WithEnvFile` reads them.
pub fn read_env_file(path: &Path) -> Result<Vec<String>, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// ctr's `--mount` flag: `type=bind,src=/a,dst=/b,options=rbind:ro` (a CSV record).
pub fn parse_mount_flag(s: &str) -> Result<Mount, SpecError> {
    let mut m = Mount::default();
    m.set_typ(None);
    m.set_source(None);
    m.set_options(None);
    for field in split_csv(s) {
        let (key, val) = field.split_once('=').ok_or(SpecError::MountKeyVal)?;
        match key {
            "type" => {
                m.set_typ(Some(val.to_owned()));
            }
            "source" | "src" => {
                m.set_source(Some(PathBuf::from(val)));
            }
            "destination" | "dst" => {
                m.set_destination(PathBuf::from(val));
            }
            "options" => {
                m.set_options(Some(val.split(':').map(str::to_owned).collect()));
            }
            _ => return Err(SpecError::MountOption(key.to_owned())),
        }
    }
    Ok(m)
}

/// One CSV record (Go's `encoding/csv`): fields split on commas, a field in double quotes may hold
/// commas, and `""` inside one is a quote.
fn split_csv(s: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if cur.is_empty() => quoted = true,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// `oci.WithMounts`.
pub fn with_mounts(spec: &mut Spec, mounts: Vec<Mount>) {
    if mounts.is_empty() {
        return;
    }
    spec.mounts_mut()
        .get_or_insert_with(Vec::new)
        .extend(mounts);
}

/// `oci.WithImageConfig` for a Linux spec: the image's environment under the spec's, its
/// entrypoint and command, its working directory, and its user (resolved in `rootfs`).
pub fn with_image_config(
    spec: &mut Spec,
    image: &ImageRunConfig,
    rootfs: &Path,
) -> Result<(), SpecError> {
    let p = process_mut(spec);
    let defaults = if image.env.is_empty() {
        vec![DEFAULT_PATH_ENV.to_owned()]
    } else {
        image.env.clone()
    };
    let env = replace_or_append_env(&defaults, &p.env().clone().unwrap_or_default());
    p.set_env(Some(env));
    let mut args = image.entrypoint.clone();
    args.extend(image.cmd.iter().cloned());
    p.set_args(Some(args));
    p.set_cwd(PathBuf::from(if image.working_dir.is_empty() {
        "/"
    } else {
        image.working_dir.as_str()
    }));
    if !image.user.is_empty() {
        with_user(spec, &image.user, rootfs)?;
        let uid = process_mut(spec).user().uid().to_string();
        return with_additional_gids(spec, &uid, rootfs);
    }
    with_additional_gids(spec, "root", rootfs)
}

/// `oci.WithProcessArgs`.
pub fn with_process_args(spec: &mut Spec, args: Vec<String>) {
    let p = process_mut(spec);
    p.set_args(Some(args));
    p.set_command_line(None);
}

/// `oci.WithProcessCwd`.
pub fn with_cwd(spec: &mut Spec, cwd: &str) {
    process_mut(spec).set_cwd(PathBuf::from(cwd));
}

/// `oci.WithTTY`: a terminal, and `TERM=xterm` appended.
pub fn with_tty(spec: &mut Spec) {
    let linux = spec.linux().is_some();
    let p = process_mut(spec);
    p.set_terminal(Some(true));
    if linux {
        let mut env = p.env().clone().unwrap_or_default();
        env.push("TERM=xterm".to_owned());
        p.set_env(Some(env));
    }
}

/// `oci.WithRootFSReadonly`.
pub fn with_readonly_rootfs(spec: &mut Spec) {
    let root = spec.root_mut().get_or_insert_with(Default::default);
    root.set_readonly(Some(true));
}

/// `oci.WithHostname` (not a ctr 1.6 flag; bctr's `--hostname`).
pub fn with_hostname(spec: &mut Spec, name: &str) {
    spec.set_hostname(Some(name.to_owned()));
}

/// `oci.WithHostNamespace(network)`, `WithHostHostsFile`, `WithHostResolvconf` and `HOSTNAME=`:
/// what ctr's `--net-host` does.
pub fn with_host_network(spec: &mut Spec, hostname: &str) {
    if let Some(ns) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut())
    {
        if let Some(i) = ns
            .iter()
            .position(|n| n.typ() == LinuxNamespaceType::Network)
        {
            ns.remove(i);
        }
    }
    let bind = |path: &str| {
        let mut m = Mount::default();
        m.set_destination(PathBuf::from(path));
        m.set_typ(Some("bind".to_owned()));
        m.set_source(Some(PathBuf::from(path)));
        m.set_options(Some(vec!["rbind".to_owned(), "ro".to_owned()]));
        m
    };
    with_mounts(spec, vec![bind("/etc/hosts"), bind("/etc/resolv.conf")]);
    with_env(spec, &[format!("HOSTNAME={hostname}")]);
}

/// containerd's `WithPrivileged` (with `caps` the caller's effective capabilities) followed by
/// `WithAllDevicesAllowed` and `WithHostDevices`.
pub fn with_privileged(spec: &mut Spec, caps: &[String], host_devices: Vec<serde_json::Value>) {
    let set: oci_spec::runtime::Capabilities = caps
        .iter()
        .filter_map(|c| serde_json::from_value::<Capability>(c.as_str().into()).ok())
        .collect();
    let p = process_mut(spec);
    let mut c = p.capabilities().clone().unwrap_or_default();
    c.set_bounding(Some(set.clone()));
    c.set_effective(Some(set.clone()));
    c.set_permitted(Some(set));
    p.set_capabilities(Some(c));
    if let Some(linux) = spec.linux_mut().as_mut() {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
        linux.set_seccomp(None);
        let devices: Vec<_> = host_devices
            .into_iter()
            .filter_map(|d| serde_json::from_value(d).ok())
            .collect();
        linux.set_devices((!devices.is_empty()).then_some(devices));
    }
    for m in spec.mounts_mut().iter_mut().flatten() {
        if matches!(m.typ().as_deref(), Some("sysfs") | Some("cgroup")) {
            if let Some(opts) = m.options_mut() {
                for o in opts.iter_mut().filter(|o| *o == "ro") {
                    *o = "rw".to_owned();
                }
            }
        }
    }
    if let Some(p) = spec.process_mut() {
        p.set_apparmor_profile(None);
        p.set_selinux_label(None);
    }
    let all: LinuxDeviceCgroup =
        serde_json::from_value(serde_json::json!({"allow": true, "access": "rwm"}))
            .unwrap_or_default();
    resources_mut(spec).set_devices(Some(vec![all]));
}

/// The names of the capabilities in a `CapEff:` mask from `/proc/self/status`.
pub fn capabilities_from_mask(mask: u64) -> Vec<String> {
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, n)| (*n).to_owned())
        .collect()
}

/// The spec's bounding capabilities by name, in the order [`to_json`] writes them (containerd's
/// default order, then by number), which is the order containerd walks them in.
fn bounding_capabilities(spec: &Spec) -> Vec<String> {
    let mut names: Vec<String> = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| match serde_json::to_value(c) {
            Ok(serde_json::Value::String(name)) => Some(name),
            _ => None,
        })
        .collect();
    names.sort_by_key(|c| cap_rank(c));
    names
}

/// containerd's `seccomp.WithDefaultProfile`: its default profile for the spec's bounding
/// capabilities on `host`. It reads the capabilities, so it comes after `--privileged`, as in ctr
/// (which is why `--privileged --seccomp` still gets a profile, with every capability's calls).
pub fn with_default_seccomp(spec: &mut Spec, host: &seccomp::Host) {
    let profile = seccomp::default_profile(&bounding_capabilities(spec), host);
    with_seccomp(spec, profile);
}

/// containerd's `seccomp.WithProfile` once the file is read: `profile` as the spec's seccomp.
pub fn with_seccomp(spec: &mut Spec, profile: LinuxSeccomp) {
    spec.linux_mut()
        .get_or_insert_with(Default::default)
        .set_seccomp(Some(profile));
}

/// `oci.WithCPUShares`.
pub fn with_cpu_shares(spec: &mut Spec, shares: u64) {
    cpu_mut(spec).set_shares(Some(shares));
}

/// `oci.WithCPUCFS`.
pub fn with_cpu_cfs(spec: &mut Spec, quota: i64, period: u64) {
    let cpu = cpu_mut(spec);
    cpu.set_quota(Some(quota));
    cpu.set_period(Some(period));
}

/// `oci.WithMemoryLimit`.
pub fn with_memory_limit(spec: &mut Spec, limit: u64) {
    let mem: &mut LinuxMemory = resources_mut(spec)
        .memory_mut()
        .get_or_insert_with(Default::default);
    mem.set_limit(Some(i64::try_from(limit).unwrap_or(i64::MAX)));
}

/// `oci.WithPidsLimit`.
pub fn with_pids_limit(spec: &mut Spec, limit: i64) {
    let mut pids = LinuxPids::default();
    pids.set_limit(limit);
    resources_mut(spec).set_pids(Some(pids));
}

/// `oci.WithAnnotations`: added to (or replacing) the spec's.
pub fn with_annotations(spec: &mut Spec, annotations: &[(String, String)]) {
    if annotations.is_empty() {
        return;
    }
    let a = spec.annotations_mut().get_or_insert_with(HashMap::new);
    for (k, v) in annotations {
        a.insert(k.clone(), v.clone());
    }
}

/// `oci.WithNewPrivileges`.
pub fn with_new_privileges(spec: &mut Spec) {
    process_mut(spec).set_no_new_privileges(Some(false));
}

/// `oci.WithCgroup`.
pub fn with_cgroup(spec: &mut Spec, path: &str) {
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    linux.set_cgroups_path((!path.is_empty()).then(|| PathBuf::from(path)));
}

/// The capability sets `oci.WithAddedCapabilities` and `oci.WithDroppedCapabilities` change:
/// bounding, effective and permitted (containerd 1.6 leaves inheritable and ambient alone).
fn change_capabilities(spec: &mut Spec, caps: &[String], add: bool) {
    let names: Vec<Capability> = caps
        .iter()
        .filter_map(|c| serde_json::from_value::<Capability>(c.as_str().into()).ok())
        .collect();
    let p = process_mut(spec);
    let mut c = p.capabilities().clone().unwrap_or_default();
    let change = |set: Option<oci_spec::runtime::Capabilities>| {
        let mut set = set.unwrap_or_default();
        for name in &names {
            if add {
                set.insert(*name);
            } else {
                set.remove(name);
            }
        }
        Some(set)
    };
    c.set_bounding(change(c.bounding().clone()));
    c.set_effective(change(c.effective().clone()));
    c.set_permitted(change(c.permitted().clone()));
    p.set_capabilities(Some(c));
}

/// `oci.WithAddedCapabilities` (`--cap-add`).
pub fn with_added_capabilities(spec: &mut Spec, caps: &[String]) {
    change_capabilities(spec, caps, true);
}

/// `oci.WithDroppedCapabilities` (`--cap-drop`).
pub fn with_dropped_capabilities(spec: &mut Spec, caps: &[String]) {
    change_capabilities(spec, caps, false);
}

/// `oci.WithLinuxNamespace` (`--with-ns type:path`): the namespace of that type is joined at
/// `path`, replacing a new one the spec asked for.
pub fn with_linux_namespace(spec: &mut Spec, typ: LinuxNamespaceType, path: &Path) {
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut ns = oci_spec::runtime::LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(Some(path.to_owned()));
    match namespaces.iter_mut().find(|n| n.typ() == typ) {
        Some(existing) => *existing = ns,
        None => namespaces.push(ns),
    }
    linux.set_namespaces(Some(namespaces));
}

/// `oci.WithDevices(path, "", permissions)` once the host's nodes are read (`--device`): each
/// node in the spec's devices and allowed in the device cgroup with `permissions`.
pub fn with_devices(spec: &mut Spec, devices: Vec<serde_json::Value>, permissions: &str) {
    for d in devices {
        let Ok(device) = serde_json::from_value::<oci_spec::runtime::LinuxDevice>(d.clone()) else {
            continue;
        };
        let rule = serde_json::json!({
            "allow": true,
            "type": d["type"],
            "major": d["major"],
            "minor": d["minor"],
            "access": permissions,
        });
        let linux = spec.linux_mut().get_or_insert_with(Default::default);
        let mut list = linux.devices().clone().unwrap_or_default();
        list.push(device);
        linux.set_devices(Some(list));
        if let Ok(rule) = serde_json::from_value::<LinuxDeviceCgroup>(rule) {
            let r = resources_mut(spec);
            let mut rules = r.devices().clone().unwrap_or_default();
            rules.push(rule);
            r.set_devices(Some(rules));
        }
    }
}

/// `oci.WithUserNamespace`: a new user namespace (unless the spec has one) with these mappings
/// added.
pub fn with_user_namespace(
    spec: &mut Spec,
    uid: oci_spec::runtime::LinuxIdMapping,
    gid: oci_spec::runtime::LinuxIdMapping,
) {
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    if !namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User)
    {
        let mut ns = oci_spec::runtime::LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::User);
        ns.set_path(None);
        namespaces.push(ns);
    }
    linux.set_namespaces(Some(namespaces));
    let mut uids = linux.uid_mappings().clone().unwrap_or_default();
    uids.push(uid);
    linux.set_uid_mappings(Some(uids));
    let mut gids = linux.gid_mappings().clone().unwrap_or_default();
    gids.push(gid);
    linux.set_gid_mappings(Some(gids));
}

/// `--rootfs-propagation`: the spec's `linux.rootfsPropagation`.
pub fn with_rootfs_propagation(spec: &mut Spec, propagation: &str) {
    spec.linux_mut()
        .get_or_insert_with(Default::default)
        .set_rootfs_propagation(Some(propagation.to_owned()));
}

// -------------------------------------------------------------------------------------------
// Users and groups, from the container's /etc/passwd and /etc/group.

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// `path` inside `root`, with symbolic links resolved as if `root` were `/` (a link can never
/// lead out of it), as containerd's `fs.RootPath` does.
pub fn root_path(root: &Path, path: &str) -> PathBuf {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .map(str::to_owned)
        .collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate: PathBuf = root.join(resolved.iter().chain([&part]).collect::<PathBuf>());
        match std::fs::read_link(&candidate) {
            Ok(target) if links < 255 => {
                links += 1;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(s) => pending.push(s.to_string_lossy().into_owned()),
                        Component::ParentDir => pending.push("..".to_owned()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(part),
        }
    }
    root.join(resolved.iter().collect::<PathBuf>())
}

fn read_optional(root: &Path, file: &str) -> Result<Option<String>, SpecError> {
    let path = root_path(root, file);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SpecError::Io { path, source }),
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3)?.trim().parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn ensure_additional_gids(p: &mut Process) {
    let gid = p.user().gid();
    let mut gids = p.user().additional_gids().clone().unwrap_or_default();
    if !gids.contains(&gid) {
        gids.insert(0, gid);
    }
    p.user_mut().set_additional_gids(Some(gids));
}

fn set_ids(spec: &mut Spec, uid: u32, gid: u32) {
    let p = process_mut(spec);
    p.user_mut().set_uid(uid);
    p.user_mut().set_gid(gid);
    p.user_mut().set_additional_gids(None);
    ensure_additional_gids(p);
}

/// The largest ID runc accepts, which containerd keeps to.
const MAX_ID: i64 = i32::MAX as i64;

fn numeric_id(s: &str) -> Option<u32> {
    s.parse::<i64>()
        .ok()
        .filter(|v| (0..=MAX_ID).contains(v))
        .and_then(|v| u32::try_from(v).ok())
}

/// `oci.WithUser`: `user`, `uid`, `user:group`, `uid:gid`, `uid:group` or `user:gid`, names
/// looked up in the container's `/etc/passwd` and `/etc/group` under `rootfs`.
pub fn with_user(spec: &mut Spec, user: &str, rootfs: &Path) -> Result<(), SpecError> {
    let parts: Vec<&str> = user.split(':').collect();
    match parts.as_slice() {
        [one] => match numeric_id(one) {
            Some(uid) => {
                // oci.WithUserID: the passwd entry's gid, or 0 when there is none.
                let users = read_optional(rootfs, "/etc/passwd")?
                    .map(|t| parse_passwd(&t))
                    .unwrap_or_default();
                let gid = users.iter().find(|u| u.uid == uid).map_or(0, |u| u.gid);
                set_ids(spec, uid, gid);
                Ok(())
            }
            None => {
                let users = read_optional(rootfs, "/etc/passwd")?
                    .map(|t| parse_passwd(&t))
                    .unwrap_or_default();
                let u = users
                    .iter()
                    .find(|u| u.name == *one)
                    .ok_or(SpecError::NoUsersFound)?;
                set_ids(spec, u.uid, u.gid);
                Ok(())
            }
        },
        [u, g] => {
            let uid = match numeric_id(u) {
                Some(uid) => uid,
                None => {
                    let users = read_optional(rootfs, "/etc/passwd")?
                        .map(|t| parse_passwd(&t))
                        .unwrap_or_default();
                    users
                        .iter()
                        .find(|e| e.name == *u)
                        .ok_or(SpecError::NoUsersFound)?
                        .uid
                }
            };
            let gid = match numeric_id(g) {
                Some(gid) => gid,
                None => {
                    let groups = read_optional(rootfs, "/etc/group")?
                        .map(|t| parse_group(&t))
                        .unwrap_or_default();
                    groups
                        .iter()
                        .find(|e| e.name == *g)
                        .ok_or(SpecError::NoGroupsFound)?
                        .gid
                }
            };
            set_ids(spec, uid, gid);
            Ok(())
        }
        _ => Err(SpecError::User(user.to_owned())),
    }
}

/// `oci.WithAdditionalGIDs`: the supplementary groups `user` (a name or uid) is listed in.
pub fn with_additional_gids(spec: &mut Spec, user: &str, rootfs: &Path) -> Result<(), SpecError> {
    let username = match user.parse::<i64>() {
        Ok(uid) => {
            let users = read_optional(rootfs, "/etc/passwd")?
                .map(|t| parse_passwd(&t))
                .unwrap_or_default();
            match users.into_iter().find(|u| i64::from(u.uid) == uid) {
                Some(u) => u.name,
                None => {
                    ensure_additional_gids(process_mut(spec));
                    return Ok(());
                }
            }
        }
        Err(_) => user.to_owned(),
    };
    let gids: Vec<u32> = read_optional(rootfs, "/etc/group")?
        .map(|t| parse_group(&t))
        .unwrap_or_default()
        .into_iter()
        .filter(|g| g.name != username && g.members.contains(&username))
        .map(|g| g.gid)
        .collect();
    let p = process_mut(spec);
    p.user_mut()
        .set_additional_gids((!gids.is_empty()).then_some(gids));
    ensure_additional_gids(p);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_spec_is_containerds() {
        let s = default_spec("default", "c1");
        let v: serde_json::Value = serde_json::from_slice(&to_json(&s).unwrap()).unwrap();
        assert_eq!(v["ociVersion"], "1.0.2-dev");
        assert_eq!(v["linux"]["cgroupsPath"], "/default/c1");
        assert_eq!(v["process"]["capabilities"]["bounding"][0], "CAP_CHOWN");
        assert_eq!(
            v["process"]["capabilities"]["bounding"][13],
            "CAP_AUDIT_WRITE"
        );
        assert_eq!(v["mounts"].as_array().unwrap().len(), 7);
        assert_eq!(
            v["linux"]["resources"]["devices"].as_array().unwrap().len(),
            10
        );
        assert_eq!(
            v["linux"]["resources"]["devices"][0],
            serde_json::json!({"allow": false, "access": "rwm"})
        );
        assert_eq!(v["linux"]["namespaces"][4]["type"], "network");
        assert_eq!(v["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert!(v["process"].get("args").is_none());
        assert!(v.get("hostname").is_none());
        assert!(v.get("annotations").is_none());
    }

    #[test]
    fn env_replace_append_and_unset() {
        let out = replace_or_append_env(
            &env(&["PATH=/bin", "A=1", "B=2"]),
            &env(&["A=3", "C=4", "B"]),
        );
        assert_eq!(out, env(&["PATH=/bin", "A=3", "C=4"]));
    }

    #[test]
    fn image_config_sets_the_process() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nweb:x:33:44::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwww:x:44:\nextra:x:50:web,other\n",
        )
        .unwrap();
        let mut s = default_spec("ns", "id");
        with_env(&mut s, &env(&["X=1"]));
        let img = ImageRunConfig {
            env: env(&["PATH=/img", "X=0"]),
            entrypoint: env(&["/bin/sh", "-c"]),
            cmd: env(&["echo"]),
            working_dir: "/w".into(),
            user: "web".into(),
        };
        with_image_config(&mut s, &img, dir.path()).unwrap();
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.env().as_ref().unwrap(), &env(&["PATH=/img", "X=1"]));
        assert_eq!(p.args().as_ref().unwrap(), &env(&["/bin/sh", "-c", "echo"]));
        assert_eq!(p.cwd(), Path::new("/w"));
        assert_eq!((p.user().uid(), p.user().gid()), (33, 44));
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &vec![44, 50]);

        with_user(&mut s, "0:www", dir.path()).unwrap();
        let p = s.process().as_ref().unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (0, 44));
        assert!(matches!(
            with_user(&mut s, "nobody", dir.path()),
            Err(SpecError::NoUsersFound)
        ));
        assert!(matches!(
            with_user(&mut s, "a:b:c", dir.path()),
            Err(SpecError::User(_))
        ));
        // No passwd entry for the uid: gid 0, as containerd.
        with_user(&mut s, "1234", dir.path()).unwrap();
        let p = s.process().as_ref().unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (1234, 0));
    }

    #[test]
    fn root_path_keeps_links_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("etc/passwd")).unwrap();
        assert_eq!(
            root_path(dir.path(), "/etc/passwd"),
            dir.path().join("etc/shadow")
        );
        std::os::unix::fs::symlink("../../..", dir.path().join("up")).unwrap();
        assert_eq!(root_path(dir.path(), "/up/x"), dir.path().join("x"));
    }

    #[test]
    fn mount_flags() {
        let m = parse_mount_flag("type=bind,src=/tmp,dst=/host,options=rbind:ro").unwrap();
        assert_eq!(m.typ().as_deref(), Some("bind"));
        assert_eq!(m.source().as_deref(), Some(Path::new("/tmp")));
        assert_eq!(m.destination(), Path::new("/host"));
        assert_eq!(m.options().as_ref().unwrap(), &env(&["rbind", "ro"]));
        assert!(matches!(
            parse_mount_flag("type=bind,bad"),
            Err(SpecError::MountKeyVal)
        ));
        assert!(matches!(
            parse_mount_flag("foo=bar"),
            Err(SpecError::MountOption(k)) if k == "foo"
        ));
        let q = parse_mount_flag("\"src=/a,b\",dst=/c").unwrap();
        assert_eq!(q.source().as_deref(), Some(Path::new("/a,b")));
    }

    #[test]
    fn seccomp_follows_the_bounding_set() {
        let host = seccomp::Host {
            arch: "amd64".into(),
            kernel: Some((6, 1)),
        };
        let mut s = default_spec("ns", "id");
        with_default_seccomp(&mut s, &host);
        let v: serde_json::Value = serde_json::from_slice(&to_json(&s).unwrap()).unwrap();
        let rules = v["linux"]["seccomp"]["syscalls"].as_array().unwrap();
        let allows = |call: &str| {
            rules.iter().any(|r| {
                r["action"] == "SCMP_ACT_ALLOW"
                    && r.get("args").is_none()
                    && r["names"].as_array().unwrap().contains(&call.into())
            })
        };
        assert!(allows("chroot") && !allows("mount"));

        // --privileged then --seccomp: the profile of every capability the caller has.
        with_privileged(
            &mut s,
            &["CAP_SYS_ADMIN".to_owned(), "CAP_SYS_BOOT".to_owned()],
            Vec::new(),
        );
        assert!(s.linux().as_ref().unwrap().seccomp().is_none());
        with_default_seccomp(&mut s, &host);
        let v: serde_json::Value = serde_json::from_slice(&to_json(&s).unwrap()).unwrap();
        let rules = v["linux"]["seccomp"]["syscalls"].as_array().unwrap();
        let firsts: Vec<&str> = rules
            .iter()
            .map(|r| r["names"][0].as_str().unwrap())
            .collect();
        assert_eq!(firsts[firsts.len() - 2..], ["bpf", "reboot"]);
        assert!(!firsts.contains(&"chroot"));
    }

    #[test]
    fn resources_and_privileged() {
        let mut s = default_spec("ns", "id");
        with_cpu_cfs(&mut s, 50000, 100000);
        with_cpu_shares(&mut s, 1024);
        with_memory_limit(&mut s, 1 << 20);
        with_pids_limit(&mut s, 10);
        with_host_network(&mut s, "host");
        with_privileged(&mut s, &capabilities_from_mask(0x3f), Vec::new());
        let v: serde_json::Value = serde_json::from_slice(&to_json(&s).unwrap()).unwrap();
        let r = &v["linux"]["resources"];
        assert_eq!(r["cpu"]["quota"], 50000);
        assert_eq!(r["cpu"]["period"], 100000);
        assert_eq!(r["memory"]["limit"], 1 << 20);
        assert_eq!(r["pids"]["limit"], 10);
        assert_eq!(
            r["devices"],
            serde_json::json!([{"allow": true, "access": "rwm"}])
        );
        assert_eq!(v["linux"]["namespaces"].as_array().unwrap().len(), 4);
        assert!(v["linux"].get("maskedPaths").is_none());
        assert_eq!(v["mounts"][5]["options"][3], "rw");
        assert_eq!(
            v["process"]["capabilities"]["bounding"],
            serde_json::json!([
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FSETID",
                "CAP_FOWNER",
                "CAP_KILL",
                "CAP_DAC_READ_SEARCH"
            ])
        );
        assert!(v["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&"HOSTNAME=host".into()));
    }
}
