//! Media types: the OCI image spec's and Docker's schema 2 (which containerd reads as the same
//! documents), and the questions containerd asks of them.

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYOUT_HEADER: &str = "application/vnd.oci.layout.header.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_NON_DISTRIBUTABLE: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_NON_DISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_NON_DISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker's schema 1 manifest, which containerd (and Berth) refuse.
pub const DOCKER_SCHEMA1_MANIFEST: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

pub const CONTAINERD_CHECKPOINT: &str =
    "application/vnd.containerd.container.criu.checkpoint.criu.tar";
pub const CONTAINERD_CHECKPOINT_CONFIG: &str =
    "application/vnd.containerd.container.checkpoint.config.v1+proto";

/// An image manifest (OCI or Docker schema 2).
pub fn is_manifest_type(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

/// An image index (OCI) or manifest list (Docker schema 2).
pub fn is_index_type(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
}

/// An image config (OCI or Docker).
pub fn is_config_type(mt: &str) -> bool {
    mt == OCI_CONFIG || mt == DOCKER_CONFIG
}

/// A config containerd knows, checkpoints included (its `IsKnownConfig`).
pub fn is_known_config(mt: &str) -> bool {
    is_config_type(mt) || mt == CONTAINERD_CHECKPOINT || mt == CONTAINERD_CHECKPOINT_CONFIG
}

/// A layer blob, compressed or not, foreign or not (containerd's `IsLayerType`).
pub fn is_layer_type(mt: &str) -> bool {
    if mt.starts_with("application/vnd.oci.image.layer.") {
        return true;
    }
    // Docker layer types with a suffix (`+gzip`, …) are layers too.
    let base = mt.split('+').next().unwrap_or(mt);
    matches!(
        base,
        DOCKER_LAYER
            | DOCKER_LAYER_GZIP
            | DOCKER_LAYER_ZSTD
            | DOCKER_LAYER_FOREIGN
            | DOCKER_LAYER_FOREIGN_GZIP
    )
}

/// A layer that must not be pushed or exported (containerd's `IsNonDistributable`).
pub fn is_non_distributable(mt: &str) -> bool {
    mt.starts_with("application/vnd.oci.image.layer.nondistributable.")
        || mt.starts_with("application/vnd.docker.image.rootfs.foreign.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert!(is_manifest_type(DOCKER_MANIFEST) && is_manifest_type(OCI_MANIFEST));
        assert!(!is_manifest_type(OCI_INDEX));
        assert!(is_index_type(DOCKER_MANIFEST_LIST) && is_index_type(OCI_INDEX));
        assert!(is_config_type(DOCKER_CONFIG) && is_config_type(OCI_CONFIG));
        assert!(is_known_config(CONTAINERD_CHECKPOINT_CONFIG));
        for l in [
            OCI_LAYER,
            OCI_LAYER_GZIP,
            OCI_LAYER_ZSTD,
            OCI_LAYER_NON_DISTRIBUTABLE_GZIP,
            DOCKER_LAYER,
            DOCKER_LAYER_GZIP,
            DOCKER_LAYER_ZSTD,
            DOCKER_LAYER_FOREIGN,
            DOCKER_LAYER_FOREIGN_GZIP,
            "application/vnd.docker.image.rootfs.diff.tar+zstd",
        ] {
            assert!(is_layer_type(l), "{l}");
        }
        assert!(!is_layer_type(OCI_CONFIG));
        assert!(!is_layer_type(DOCKER_MANIFEST));
        assert!(is_non_distributable(DOCKER_LAYER_FOREIGN_GZIP));
        assert!(is_non_distributable(OCI_LAYER_NON_DISTRIBUTABLE));
        assert!(!is_non_distributable(OCI_LAYER_GZIP));
    }
}
