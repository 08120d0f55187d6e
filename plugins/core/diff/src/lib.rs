//! The "walking" differ, without gRPC: apply a layer blob onto a snapshot's mounts, and write the
//! changes between two mounts as a layer into the content store. The diff service and the
//! daemon-side unpacker both call it.
//!
//! Apply reads a layer blob from the content store, decompresses it by media type and extracts it
//! onto the snapshot the mounts describe. It does so without mounting when it can, as containerd
//! does for overlay: for an overlay mount the layer goes straight into the upper directory, with
//! whiteouts as overlay character devices and opaque xattrs; for a bind mount straight into its
//! source, with whiteouts as deletions. Other mounts are mounted on a temporary directory first.
//! Diff mounts both sides read-only, writes the changes as a gzip layer into the content store and
//! labels it with its uncompressed digest.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use berth_archive::{ApplyOptions, ArchiveError, DiffOptions, WhiteoutMode, XattrPrefix};
use berth_content_store::{ContentError, ContentStore};
use berth_metadata::Descriptor;
use berth_mount::{Mount, MountError, TempMount};
use berth_plugin::{Classify, ErrorKind};

pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The label containerd puts on a compressed layer blob: its uncompressed digest.
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    #[error("{0}: not implemented")]
    Unsupported(String),
    /// A layer media type no applier reads (containerd's wording and, as containerd passes this
    /// error on unclassified, gRPC Unknown).
    #[error("failed to get stream processor for {0}: no processor for media-type")]
    NoProcessor(String),
    /// The temporary file a diff is written to before it goes into the content store.
    #[error("diff: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DiffError {
    fn io<'p>(
        op: &'static str,
        path: &'p std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'p {
        move |source| DiffError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

impl Classify for DiffError {
    fn kind(&self) -> ErrorKind {
        match self {
            DiffError::Content(e) => e.kind(),
            DiffError::Mount(MountError::ContainsNul { .. }) => ErrorKind::InvalidArgument,
            DiffError::Mount(_) => ErrorKind::Internal,
            DiffError::Archive(e) => e.kind(),
            DiffError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            DiffError::Unsupported(_) => ErrorKind::NotImplemented,
            DiffError::NoProcessor(_) => ErrorKind::Unknown,
            DiffError::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// Where to extract, and how, for the given mounts.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// Straight into a directory (overlay upper or bind source).
    Dir {
        path: PathBuf,
        whiteouts: WhiteoutMode,
        parents: Vec<PathBuf>,
    },
    /// Mount first.
    Mounted(Vec<Mount>),
}

fn target(mounts: Vec<Mount>) -> Target {
    if let [m] = mounts.as_slice() {
        if let Some(overlay) = m.overlay_options() {
            if let Some(upper) = overlay.upperdir {
                let prefix = if overlay.userxattr {
                    XattrPrefix::User
                } else {
                    XattrPrefix::Trusted
                };
                return Target::Dir {
                    path: upper,
                    whiteouts: WhiteoutMode::Overlay {
                        xattr_prefix: prefix,
                    },
                    parents: overlay.lowerdirs,
                };
            }
        } else if matches!(m.mount_type.as_str(), "bind" | "rbind") && !m.is_readonly() {
            return Target::Dir {
                path: PathBuf::from(&m.source),
                whiteouts: WhiteoutMode::Delete,
                parents: Vec::new(),
            };
        }
    }
    Target::Mounted(mounts)
}

/// Applies the layer `desc` from the content store onto the snapshot `mounts` describe, and
/// returns the uncompressed layer's descriptor (its digest is the diff_id).
pub fn apply_layer(
    content: &ContentStore,
    ns: &str,
    desc: &Descriptor,
    mounts: Vec<Mount>,
    sync: bool,
) -> Result<Descriptor, DiffError> {
    // The media type is checked before the content is looked up, as containerd does.
    if let Err(ArchiveError::UnsupportedMediaType(_)) =
        berth_archive::media_type_compression(&desc.media_type)
    {
        return Err(DiffError::NoProcessor(desc.media_type.clone()));
    }
    let (file, _size) = content.open_reader(ns, &desc.digest)?;
    let reader =
        berth_archive::decompress(BufReader::with_capacity(1 << 20, file), &desc.media_type)
            .map_err(|e| match e {
                ArchiveError::UnsupportedMediaType(_) => {
                    DiffError::NoProcessor(desc.media_type.clone())
                }
                other => other.into(),
            })?;
    let stats = match target(mounts) {
        Target::Dir {
            path,
            whiteouts,
            parents,
        } => {
            let opts = ApplyOptions {
                whiteouts,
                parents,
                allow_devices: true,
                sync,
                ..Default::default()
            };
            berth_archive::apply(reader, &path, &opts)?
        }
        Target::Mounted(mounts) => {
            let m = TempMount::new(&mounts)?;
            let opts = ApplyOptions {
                allow_devices: true,
                sync,
                ..Default::default()
            };
            berth_archive::apply(reader, m.path(), &opts)?
        }
    };
    tracing::debug!(diff_id = %stats.diff_id, entries = stats.entries, "layer applied");
    Ok(Descriptor {
        media_type: MEDIA_TYPE_LAYER.to_owned(),
        digest: stats.diff_id,
        size: stats.size as i64,
        annotations: Default::default(),
    })
}

fn readonly(mut mounts: Vec<Mount>) -> Vec<Mount> {
    for m in &mut mounts {
        m.options.retain(|o| o != "rw");
        if !m.options.iter().any(|o| o == "ro") {
            m.options.push("ro".into());
        }
    }
    mounts
}

/// What to diff and how to store the result (containerd's DiffRequest, without protobuf).
#[derive(Debug, Clone, Default)]
pub struct DiffParams {
    /// The lower side's mounts.
    pub left: Vec<Mount>,
    /// The upper side's mounts.
    pub right: Vec<Mount>,
    /// The layer's media type; empty for a gzip OCI layer.
    pub media_type: String,
    /// The content store ingest reference; empty for one derived from the digest.
    pub reference: String,
    /// Labels of the stored blob (the uncompressed digest label is added).
    pub labels: BTreeMap<String, String>,
    /// Clamp modification times to this (reproducible layers).
    pub source_date_epoch: Option<SystemTime>,
}

/// Writes the changes from `params.left` to `params.right` as a layer into the content store,
/// in namespace `ns` and under `lease`, and returns its descriptor.
pub fn diff(
    content: &ContentStore,
    ns: &str,
    lease: Option<&str>,
    req: DiffParams,
) -> Result<Descriptor, DiffError> {
    let media_type = if req.media_type.is_empty() {
        MEDIA_TYPE_LAYER_GZIP.to_owned()
    } else {
        req.media_type.clone()
    };
    let gzip = match media_type.as_str() {
        MEDIA_TYPE_LAYER_GZIP | "application/vnd.docker.image.rootfs.diff.tar.gzip" => true,
        MEDIA_TYPE_LAYER | "application/vnd.docker.image.rootfs.diff.tar" => false,
        other => {
            return Err(DiffError::Unsupported(format!(
                "diff media type {other:?} (use {MEDIA_TYPE_LAYER_GZIP} or {MEDIA_TYPE_LAYER})"
            )))
        }
    };
    let lower = TempMount::new(&readonly(req.left))?;
    let upper = TempMount::new(&readonly(req.right))?;
    let mut tmp = tempfile::NamedTempFile::new().map_err(DiffError::io(
        "create a temporary file in",
        &std::env::temp_dir(),
    ))?;
    let opts = DiffOptions {
        mod_time_upper_bound: req.source_date_epoch,
        gzip_level: None,
    };
    let stats = if gzip {
        berth_archive::write_diff_gzip(lower.path(), upper.path(), tmp.as_file_mut(), &opts)?
    } else {
        berth_archive::write_diff(lower.path(), upper.path(), tmp.as_file_mut(), &opts)?
    };
    drop((lower, upper));
    let (digest, size) = match (&stats.compressed_digest, stats.compressed_size) {
        (Some(d), Some(s)) => (d.clone(), s as i64),
        _ => (stats.diff_id.clone(), stats.size as i64),
    };
    // Into the content store through an ordinary writer, so the blob is committed, recorded in
    // the namespace and held by the request's lease like any other.
    let reference = if req.reference.is_empty() {
        format!("diff-{}", digest.trim_start_matches("sha256:"))
    } else {
        req.reference.clone()
    };
    let mut labels = req.labels;
    labels.insert(UNCOMPRESSED_LABEL.to_owned(), stats.diff_id.clone());
    match content.writer(ns, &reference, size, &digest, lease) {
        Ok(mut w) => {
            use std::io::{Read, Seek};
            let path = tmp.path().to_owned();
            let f = tmp.as_file_mut();
            f.flush().map_err(DiffError::io("flush", &path))?;
            f.seek(std::io::SeekFrom::Start(w.status().offset as u64))
                .map_err(DiffError::io("seek", &path))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(DiffError::io("read", &path))?;
                if n == 0 {
                    break;
                }
                w.write(&buf[..n])?;
            }
            w.commit(content, size, &digest, labels)?;
        }
        // The same layer is already in this namespace: nothing to store.
        Err(ContentError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Descriptor {
        media_type,
        digest,
        size,
        annotations: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_source_and_path() {
        use std::error::Error as _;
        let e = DiffError::io("read", std::path::Path::new("/tmp/.tmpX"))(std::io::Error::from(
            std::io::ErrorKind::UnexpectedEof,
        ));
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.to_string().starts_with("diff: read /tmp/.tmpX: "), "{e}");
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(|e| e.kind()),
            Some(std::io::ErrorKind::UnexpectedEof)
        );
    }

    fn mount(mount_type: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            mount_type: mount_type.into(),
            source: source.into(),
            target: String::new(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn an_active_overlay_is_applied_straight_into_its_upper() {
        let m = mount(
            "overlay",
            "overlay",
            &[
                "index=off",
                "userxattr",
                "workdir=/s/3/work",
                "upperdir=/s/3/fs",
                "lowerdir=/s/2/fs:/s/1/fs",
            ],
        );
        assert_eq!(
            target(vec![m]),
            Target::Dir {
                path: "/s/3/fs".into(),
                whiteouts: WhiteoutMode::Overlay {
                    xattr_prefix: XattrPrefix::User
                },
                parents: vec!["/s/2/fs".into(), "/s/1/fs".into()],
            }
        );
        let m = mount("overlay", "overlay", &["upperdir=/u", "lowerdir=/l"]);
        assert!(matches!(
            target(vec![m]),
            Target::Dir {
                whiteouts: WhiteoutMode::Overlay {
                    xattr_prefix: XattrPrefix::Trusted
                },
                ..
            }
        ));
    }

    #[test]
    fn a_writable_bind_is_applied_into_its_source_with_deletions() {
        assert_eq!(
            target(vec![mount("bind", "/s/1/fs", &["rw", "rbind"])]),
            Target::Dir {
                path: "/s/1/fs".into(),
                whiteouts: WhiteoutMode::Delete,
                parents: Vec::new(),
            }
        );
    }

    #[test]
    fn anything_else_is_mounted_first() {
        for mounts in [
            vec![mount("overlay", "overlay", &["ro", "lowerdir=/b:/a"])],
            vec![mount("bind", "/s/1/fs", &["ro", "rbind"])],
            vec![mount("ext4", "/dev/sdb1", &[])],
            vec![
                mount("bind", "/a", &["rw", "rbind"]),
                mount("bind", "/b", &["rw", "rbind"]),
            ],
        ] {
            assert_eq!(target(mounts.clone()), Target::Mounted(mounts));
        }
    }
}
