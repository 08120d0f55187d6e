//! The registry client: what containerd's `core/remotes/docker` does for pull and push, as a
//! library the Transfer service drives (no tonic, no protobuf).
//!
//! - [`Reference`] parses and normalises image references as Docker does (`busybox` is
//!   `docker.io/library/busybox:latest`); `docker.io` is served by `registry-1.docker.io`.
//! - [`hosts`] reads containerd's `certs.d` layout (`<dir>/<registry>/hosts.toml`): mirrors with
//!   capabilities, CA files, `skip_verify`, `override_path`, headers. Loopback registries are
//!   plain HTTP, as in containerd.
//! - [`auth`] answers `WWW-Authenticate` challenges (Basic, and Bearer with a token fetched from
//!   the realm), with credentials from [`CredentialSource`]s: fixed, Docker's `config.json`, or a
//!   callback (the Transfer API asks its client). A 401 names the credentials that were tried.
//! - [`RegistryClient`] is cheap to clone (`Clone + Send + Sync`, one `Arc`) and keeps the
//!   connection pools and tokens; [`RegistryClient::repository`] gives a [`Repository`], on which
//!   the primitives hang:
//!   - pull: [`Repository::resolve`] (HEAD, GET when HEAD says too little),
//!     [`Repository::fetch_manifest`] (verified), [`select_manifest`] (containerd's platform
//!     matching from `berth-oci`), [`Repository::fetch_blob`] (a [`BlobStream`] from an offset,
//!     by HTTP Range, verified), and [`copy_blob_to_ingest`], which resumes a content-store
//!     ingest at its offset, reports [`Progress`] and commits with the expected digest;
//!   - push: [`Repository::blob_exists`], [`Repository::manifest_exists`],
//!     [`Repository::push_blob`] (cross-repository mount first when asked, then one PUT up to
//!     `monolithic_upload_limit`, PATCH chunks above),
//!     [`push_blob_from_store`], [`Repository::push_manifest`].
//!
//! Walking an image (which children to fetch, in what order, how many layers at once) is the
//! caller's: every operation is independent and the client is shared between parallel tasks.
//! Errors are [`RemoteError`], classified for gRPC through `berth_plugin::Classify`.

pub mod auth;
mod client;
mod error;
pub mod hosts;
mod ingest;
mod pull;
mod push;
mod reference;

pub use auth::{CredentialCallback, CredentialSource, Credentials};
pub use client::{ClientConfig, RegistryClient, Repository};
pub use error::{CredentialsTried, RemoteError};
pub use hosts::{Capabilities, RegistryHost};
pub use ingest::{copy_blob_to_ingest, CopyOutcome, IngestTarget, Progress};
pub use pull::{descriptor_digest, select_manifest, BlobStream, MANIFEST_ACCEPT};
pub use push::{push_blob_from_store, BlobPushOutcome};
pub use reference::{
    registry_host, Reference, ReferenceError, ReferenceProblem, DOCKER_HUB, DOCKER_HUB_REGISTRY,
};
