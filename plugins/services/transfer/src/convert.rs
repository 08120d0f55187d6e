//! Protobuf ↔ engine types: the transfer objects in, progress events and auth requests out.

use berth_api::types::transfer as tt;
use berth_oci::platform;
use berth_remotes::{CredentialCallback, Credentials};
use berth_streams::{Message, Stream};
use prost::Message as _;
use std::sync::Arc;
use tonic::Status;

const OCI_REGISTRY: &str = "containerd.types.transfer.OCIRegistry";
const IMAGE_STORE: &str = "containerd.types.transfer.ImageStore";
const IMAGE_IMPORT_STREAM: &str = "containerd.types.transfer.ImageImportStream";
const IMAGE_EXPORT_STREAM: &str = "containerd.types.transfer.ImageExportStream";
const PROGRESS: &str = "containerd.types.transfer.Progress";
const AUTH_REQUEST: &str = "containerd.types.transfer.AuthRequest";
const AUTH_RESPONSE: &str = "containerd.types.transfer.AuthResponse";

/// A decoded source or destination.
pub(crate) enum Object {
    Registry(tt::OciRegistry),
    ImageStore(tt::ImageStore),
    /// An archive the client streams in.
    ImportStream(tt::ImageImportStream),
    /// An archive streamed out to the client.
    ExportStream(tt::ImageExportStream),
    /// A type the engine does not move images to or from.
    Other,
}

/// Decodes a transfer object by the name after the last `/` of its type URL (containerd's Go
/// clients send bare names).
pub(crate) fn decode(a: &prost_types::Any) -> Result<Object, Status> {
    let bad = |e: prost::DecodeError| {
        Status::invalid_argument(format!("{}: {e}: invalid argument", a.type_url))
    };
    Ok(match berth_streams::type_name(&a.type_url) {
        OCI_REGISTRY => Object::Registry(tt::OciRegistry::decode(a.value.as_slice()).map_err(bad)?),
        IMAGE_STORE => Object::ImageStore(tt::ImageStore::decode(a.value.as_slice()).map_err(bad)?),
        IMAGE_IMPORT_STREAM => {
            Object::ImportStream(tt::ImageImportStream::decode(a.value.as_slice()).map_err(bad)?)
        }
        IMAGE_EXPORT_STREAM => {
            Object::ExportStream(tt::ImageExportStream::decode(a.value.as_slice()).map_err(bad)?)
        }
        _ => Object::Other,
    })
}

fn platform_of(p: &berth_api::types::Platform) -> berth_oci::Platform {
    platform::normalize(&platform::new(&p.os, &p.architecture, &p.variant))
}

/// The API's image store as the engine's.
pub(crate) fn image_store(is: tt::ImageStore) -> berth_transfer::ImageStore {
    berth_transfer::ImageStore {
        name: is.name,
        labels: is.labels.into_iter().collect(),
        platforms: is.platforms.iter().map(platform_of).collect(),
        all_metadata: is.all_metadata,
        manifest_limit: is.manifest_limit,
        extra_references: is
            .extra_references
            .into_iter()
            .map(|r| berth_transfer::ImageReference {
                name: r.name,
                is_prefix: r.is_prefix,
                allow_overwrite: r.allow_overwrite,
                add_digest: r.add_digest,
                skip_named_digest: r.skip_named_digest,
            })
            .collect(),
        unpacks: is
            .unpacks
            .into_iter()
            .map(|u| berth_transfer::UnpackConfig {
                platform: u.platform.as_ref().map(platform_of),
                snapshotter: u.snapshotter,
            })
            .collect(),
    }
}

/// The API's export options as the engine's (containerd's `ImageExportStream`).
pub(crate) fn export_options(s: &tt::ImageExportStream) -> berth_transfer::ExportOptions {
    berth_transfer::ExportOptions {
        platforms: s.platforms.iter().map(platform_of).collect(),
        all_platforms: s.all_platforms,
        skip_compatibility_manifest: s.skip_compatibility_manifest,
        skip_non_distributable: s.skip_non_distributable,
    }
}

/// A progress event as containerd's `Progress` in an `Any`.
pub(crate) fn progress_message(p: berth_transfer::Progress) -> Message {
    let desc = p.desc.map(|d| berth_api::types::Descriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: i64::try_from(d.size()).unwrap_or(i64::MAX),
        annotations: d
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    });
    let msg = tt::Progress {
        event: p.event,
        name: p.name,
        parents: p.parents,
        progress: p.progress,
        total: p.total,
        desc,
    };
    Message::new(PROGRESS, msg.encode_to_vec())
}

/// Credentials asked of the client over its auth stream, as containerd's registry does: one
/// `AuthRequest` out, one `AuthResponse` back, one exchange at a time. A stream that fails
/// gives no credentials (the registry's 401 then says none were found) rather than an error of
/// its own.
pub(crate) fn credentials_over(stream: Stream, reference: String) -> CredentialCallback {
    let exchange = Arc::new(tokio::sync::Mutex::new(()));
    Arc::new(move |host: String| {
        let (stream, reference, exchange) = (stream.clone(), reference.clone(), exchange.clone());
        Box::pin(async move {
            let _one_at_a_time = exchange.lock().await;
            let req = tt::AuthRequest {
                host: host.clone(),
                reference,
                wwwauthenticate: Vec::new(),
            };
            if let Err(e) = stream
                .send(Message::new(AUTH_REQUEST, req.encode_to_vec()))
                .await
            {
                tracing::warn!(error = %e, %host, "cannot ask the client for credentials");
                return Ok(None);
            }
            let resp = match stream.recv().await {
                Ok(m) if m.is(AUTH_RESPONSE) => m,
                Ok(m) => {
                    tracing::warn!(type_url = %m.type_url, "the client answered an auth request with something else");
                    return Ok(None);
                }
                Err(e) => {
                    tracing::warn!(error = %e, %host, "no credentials from the client");
                    return Ok(None);
                }
            };
            let resp = match tt::AuthResponse::decode(resp.value.as_slice()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable AuthResponse");
                    return Ok(None);
                }
            };
            Ok(match tt::AuthType::try_from(resp.auth_type) {
                Ok(tt::AuthType::Credentials) => Some(Credentials::new(resp.username, resp.secret)),
                // A refresh token goes where Docker puts identity tokens: the password with an
                // empty user name.
                Ok(tt::AuthType::Refresh) => Some(Credentials::new("", resp.secret)),
                Ok(tt::AuthType::Header) => {
                    tracing::warn!(%host, "header credentials from the client are not supported");
                    None
                }
                Ok(tt::AuthType::None) | Err(_) => None,
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_by_the_name_after_the_last_slash() {
        let r = tt::OciRegistry {
            reference: "127.0.0.1:5000/a:b".into(),
            resolver: None,
        };
        for url in [
            OCI_REGISTRY.to_owned(),
            format!("type.googleapis.com/{OCI_REGISTRY}"),
        ] {
            let a = prost_types::Any {
                type_url: url,
                value: r.encode_to_vec(),
            };
            assert!(matches!(decode(&a), Ok(Object::Registry(x)) if x.reference == r.reference));
        }
        let import = tt::ImageImportStream {
            stream: "import-1".into(),
            media_type: String::new(),
            force_compress: true,
        };
        for url in [
            IMAGE_IMPORT_STREAM.to_owned(),
            format!("type.googleapis.com/{IMAGE_IMPORT_STREAM}"),
        ] {
            let a = prost_types::Any {
                type_url: url,
                value: import.encode_to_vec(),
            };
            assert!(
                matches!(decode(&a), Ok(Object::ImportStream(x)) if x.stream == "import-1" && x.force_compress)
            );
        }
        let export = tt::ImageExportStream {
            stream: "export-1".into(),
            platforms: vec![berth_api::types::Platform {
                os: "linux".into(),
                architecture: "arm64".into(),
                ..Default::default()
            }],
            skip_compatibility_manifest: true,
            ..Default::default()
        };
        let a = prost_types::Any {
            type_url: IMAGE_EXPORT_STREAM.into(),
            value: export.encode_to_vec(),
        };
        let Ok(Object::ExportStream(x)) = decode(&a) else {
            panic!("not an export stream");
        };
        let o = export_options(&x);
        assert!(o.skip_compatibility_manifest && !o.all_platforms);
        assert_eq!(platform::format(&o.platforms[0]), "linux/arm64");
        let other = prost_types::Any {
            type_url: "containerd.types.transfer.Something".into(),
            value: Vec::new(),
        };
        assert!(matches!(decode(&other), Ok(Object::Other)));
        let garbage = prost_types::Any {
            type_url: IMAGE_IMPORT_STREAM.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert_eq!(
            decode(&garbage).err().map(|s| s.code()),
            Some(tonic::Code::InvalidArgument)
        );
    }
}
