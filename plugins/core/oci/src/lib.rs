//! Berth's one OCI model, shared by the unpacker, bctr and the test fixtures.
//!
//! - The documents are `oci-spec`'s image types, re-exported here ([`Descriptor`],
//!   [`ImageManifest`], [`ImageIndex`], [`ImageConfiguration`], [`Platform`] and their builders);
//!   Docker schema 2 documents read into the same types, their media types are in [`media`].
//! - [`Digest`] is the one digest type and validator (`sha256:` + 64 lowercase hex, and the other
//!   algorithms go-digest knows); [`chain_id`] is containerd's `identity.ChainID`.
//! - [`platform`] is containerd's `platforms` package: [`host_platform`], normalisation, parsing
//!   and formatting of `os/arch[/variant]`, and the [`Matcher`] (`Only`, `OnlyStrict`, `Ordered`).
//! - [`document`] reads manifests, indexes and configs as containerd does (refusing an index where
//!   a manifest should be, and schema 1), lists a document's children and their GC labels.
//! - [`go_json`] writes a document byte-for-byte as Go's `encoding/json` would, so a document Berth
//!   writes has the digest containerd's would have.
//!
//! Nothing here knows tonic, protobuf or the stores.

pub mod digest;
pub mod document;
mod json;
pub mod media;
pub mod platform;

pub use digest::{chain_id, chain_ids, Algorithm, Digest, DigestError};
pub use document::DocumentError;
pub use json::go_json;
pub use platform::{host_platform, Matcher, PlatformError};

/// `oci-spec` itself, for the types not re-exported here.
pub use oci_spec;
pub use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, ImageConfiguration, ImageConfigurationBuilder, ImageIndex,
    ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, Os, Platform,
    PlatformBuilder, RootFs,
};

/// Annotation naming an image in full (`docker.io/library/alpine:3`), containerd's.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Annotation naming a reference within an OCI layout (usually just the tag), the OCI spec's.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Label on a compressed layer naming its uncompressed digest, containerd's.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Label on a config naming the chain ID unpacked for it in a snapshotter (the key ends in the
/// snapshotter's name), which containerd's collector follows.
pub const LABEL_GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";
