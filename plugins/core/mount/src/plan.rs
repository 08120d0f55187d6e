//! From a [`Mount`] to the system calls that make it, without making them, so every decision
//! (flags, data string, which API) is unit-tested without root.

use nix::mount::MsFlags;

use crate::Mount;

/// The longest data string mount(2) takes: it copies one page, NUL included.
pub(crate) const PAGE_LIMIT: usize = 4095;

/// `fsmount` attribute bits (linux/mount.h; not in the libc crate).
pub(crate) mod attr {
    pub const RDONLY: u32 = 0x01;
    pub const NOSUID: u32 = 0x02;
    pub const NODEV: u32 = 0x04;
    pub const NOEXEC: u32 = 0x08;
    pub const NOATIME: u32 = 0x10;
}

/// A mount's options split into what mount(2) takes as flags and what goes to the filesystem.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Options<'a> {
    pub flags: MsFlags,
    /// Filesystem options, in their order (the data argument once joined with commas).
    pub data: Vec<&'a str>,
    pub readonly: bool,
}

pub(crate) fn split_options(options: &[String]) -> Options<'_> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut readonly = false;
    for o in options {
        match o.as_str() {
            "ro" => readonly = true,
            "rw" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            // Propagation is the caller's business once the mount exists.
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {}
            other => data.push(other),
        }
    }
    Options {
        flags,
        data,
        readonly,
    }
}

/// One `fsconfig` call of the new mount API.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FsParam<'a> {
    /// `FSCONFIG_SET_FLAG` (an option without value, such as `userxattr`).
    Flag(&'a str),
    /// `FSCONFIG_SET_STRING`.
    String { key: &'a str, value: &'a str },
}

/// How a mount is made.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan<'a> {
    /// mount(2) with `MS_BIND`, then, for a read-only bind, a remount: a bind mount takes
    /// `MS_RDONLY` only on a remount.
    Bind {
        source: &'a str,
        flags: MsFlags,
        readonly: bool,
    },
    /// mount(2) with the options joined as its data argument.
    Data {
        source: &'a str,
        fstype: &'a str,
        flags: MsFlags,
        data: String,
    },
    /// An overlay whose options do not fit in a page: `fsopen("overlay")`, these parameters
    /// (one `lowerdir+` per layer), `fsmount` with these attributes, `move_mount`.
    OverlayByLayer {
        params: Vec<FsParam<'a>>,
        attrs: u32,
    },
}

pub(crate) fn plan(m: &Mount) -> Plan<'_> {
    let Options {
        mut flags,
        data,
        readonly,
    } = split_options(&m.options);
    match m.mount_type.as_str() {
        "bind" | "rbind" => {
            flags |= MsFlags::MS_BIND;
            if m.mount_type == "rbind" {
                flags |= MsFlags::MS_REC;
            }
            Plan::Bind {
                source: &m.source,
                flags,
                readonly,
            }
        }
        fstype => {
            if readonly {
                flags |= MsFlags::MS_RDONLY;
            }
            let data_string = data.join(",");
            if fstype == "overlay" && data_string.len() > PAGE_LIMIT {
                return Plan::OverlayByLayer {
                    params: fs_params(&data),
                    attrs: fsmount_attrs(flags),
                };
            }
            Plan::Data {
                // overlay has no source device; containerd writes "overlay" there too.
                source: if fstype == "overlay" {
                    "overlay"
                } else {
                    &m.source
                },
                fstype,
                flags,
                data: data_string,
            }
        }
    }
}

/// The `fsconfig` calls for filesystem options: `lowerdir=a:b:c` becomes one `lowerdir+` per
/// layer, in the same order (nearest first), which lifts the page limit on the layer list.
pub(crate) fn fs_params<'a>(data: &[&'a str]) -> Vec<FsParam<'a>> {
    let mut params = Vec::new();
    for o in data {
        match o.split_once('=') {
            Some(("lowerdir", dirs)) => params.extend(crate::overlay::split_lowerdirs(dirs).map(
                |d| FsParam::String {
                    key: "lowerdir+",
                    value: d,
                },
            )),
            Some((key, value)) => params.push(FsParam::String { key, value }),
            None => params.push(FsParam::Flag(o)),
        }
    }
    params
}

/// The mount attributes `fsmount` takes for the mount(2) flags that have one.
pub(crate) fn fsmount_attrs(flags: MsFlags) -> u32 {
    [
        (MsFlags::MS_RDONLY, attr::RDONLY),
        (MsFlags::MS_NOSUID, attr::NOSUID),
        (MsFlags::MS_NODEV, attr::NODEV),
        (MsFlags::MS_NOEXEC, attr::NOEXEC),
        (MsFlags::MS_NOATIME, attr::NOATIME),
    ]
    .into_iter()
    .filter(|(f, _)| flags.contains(*f))
    .fold(0, |acc, (_, a)| acc | a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(mount_type: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            mount_type: mount_type.into(),
            source: source.into(),
            target: String::new(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn flags_are_taken_out_of_the_options_and_the_rest_stays_in_order() {
        let opts: Vec<String> = [
            "rw",
            "nosuid",
            "index=off",
            "nodev",
            "rprivate",
            "userxattr",
            "noexec",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = split_options(&opts);
        assert_eq!(
            got,
            Options {
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                data: vec!["index=off", "userxattr"],
                readonly: false,
            }
        );
        let ro = vec!["ro".to_owned(), "rbind".to_owned()];
        let got = split_options(&ro);
        assert!(got.readonly);
        assert_eq!(got.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert!(got.data.is_empty());
    }

    #[test]
    fn a_read_only_bind_is_a_bind_then_a_remount() {
        assert_eq!(
            plan(&mount("bind", "/a/fs", &["ro", "rbind"])),
            Plan::Bind {
                source: "/a/fs",
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                readonly: true,
            }
        );
        assert_eq!(
            plan(&mount("bind", "/a/fs", &["rw"])),
            Plan::Bind {
                source: "/a/fs",
                flags: MsFlags::MS_BIND,
                readonly: false,
            }
        );
        // The mount type alone asks for recursion too.
        assert_eq!(
            plan(&mount("rbind", "/a", &[])),
            Plan::Bind {
                source: "/a",
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                readonly: false,
            }
        );
    }

    #[test]
    fn an_overlay_within_a_page_is_one_mount_call_with_its_options_joined() {
        let m = mount(
            "overlay",
            "ignored",
            &[
                "index=off",
                "workdir=/s/2/work",
                "upperdir=/s/2/fs",
                "lowerdir=/s/1/fs",
            ],
        );
        assert_eq!(
            plan(&m),
            Plan::Data {
                source: "overlay",
                fstype: "overlay",
                flags: MsFlags::empty(),
                data: "index=off,workdir=/s/2/work,upperdir=/s/2/fs,lowerdir=/s/1/fs".into(),
            }
        );
        let ro = mount("overlay", "overlay", &["ro", "lowerdir=/s/2/fs:/s/1/fs"]);
        assert_eq!(
            plan(&ro),
            Plan::Data {
                source: "overlay",
                fstype: "overlay",
                flags: MsFlags::MS_RDONLY,
                data: "lowerdir=/s/2/fs:/s/1/fs".into(),
            }
        );
    }

    #[test]
    fn other_filesystems_keep_their_source_and_type() {
        assert_eq!(
            plan(&mount("tmpfs", "tmpfs", &["ro", "nosuid", "size=64k"])),
            Plan::Data {
                source: "tmpfs",
                fstype: "tmpfs",
                flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
                data: "size=64k".into(),
            }
        );
    }

    /// A `lowerdir=` option exactly `len` bytes long.
    fn lowerdir_of_len(len: usize) -> String {
        let prefix = "lowerdir=/";
        format!("{prefix}{}", "x".repeat(len - prefix.len()))
    }

    #[test]
    fn the_new_mount_api_takes_over_exactly_past_a_page() {
        let fits = lowerdir_of_len(PAGE_LIMIT);
        let m = mount("overlay", "overlay", &[fits.as_str()]);
        assert!(matches!(plan(&m), Plan::Data { ref data, .. } if data.len() == PAGE_LIMIT));

        let over = lowerdir_of_len(PAGE_LIMIT + 1);
        let m = mount("overlay", "overlay", &[over.as_str()]);
        assert!(matches!(plan(&m), Plan::OverlayByLayer { .. }));
    }

    #[test]
    fn deep_overlays_pass_one_lowerdir_per_layer_nearest_first() {
        let lower: Vec<String> = (0..500)
            .rev()
            .map(|i| format!("/var/lib/berth/snapshots/{i}/fs"))
            .collect();
        let lowerdir = format!("lowerdir={}", lower.join(":"));
        let m = mount(
            "overlay",
            "overlay",
            &[
                "ro",
                "nodev",
                "index=off",
                "userxattr",
                "upperdir=/u",
                "workdir=/w",
                &lowerdir,
            ],
        );
        let Plan::OverlayByLayer { params, attrs } = plan(&m) else {
            panic!("a 500-layer overlay must go through the new mount API");
        };
        assert_eq!(attrs, attr::RDONLY | attr::NODEV);
        assert_eq!(
            &params[..4],
            &[
                FsParam::String {
                    key: "index",
                    value: "off"
                },
                FsParam::Flag("userxattr"),
                FsParam::String {
                    key: "upperdir",
                    value: "/u"
                },
                FsParam::String {
                    key: "workdir",
                    value: "/w"
                },
            ]
        );
        let layers: Vec<&str> = params[4..]
            .iter()
            .map(|p| match p {
                FsParam::String {
                    key: "lowerdir+",
                    value,
                } => *value,
                other => panic!("expected only lowerdir+ after the other options, got {other:?}"),
            })
            .collect();
        assert_eq!(layers, lower);
    }

    #[test]
    fn empty_layers_in_a_lowerdir_list_are_skipped() {
        assert_eq!(
            fs_params(&["lowerdir=/a::/b:"]),
            vec![
                FsParam::String {
                    key: "lowerdir+",
                    value: "/a"
                },
                FsParam::String {
                    key: "lowerdir+",
                    value: "/b"
                },
            ]
        );
    }

    #[test]
    fn fsmount_attributes_follow_the_flags_that_have_one() {
        assert_eq!(fsmount_attrs(MsFlags::empty()), 0);
        assert_eq!(
            fsmount_attrs(
                MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC
                    | MsFlags::MS_NOATIME
                    | MsFlags::MS_RELATIME
            ),
            attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC | attr::NOATIME
        );
    }
}
