//! `containerd.services.introspection.v1.Introspection`: what plugins this daemon has and how
//! each fared at start-up, and who the server is (a stable UUID, its pid and pid namespace).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_api::google::rpc::Status as RpcStatus;
use berth_api::introspection::{
    introspection_server::{Introspection, IntrospectionServer},
    Plugin, PluginInfoRequest, PluginInfoResponse, PluginsRequest, PluginsResponse, ServerResponse,
};
use berth_api::types::Platform;
use berth_filters::{Adaptor, Filters};
use berth_plugin::{types, InitError, PluginRecord, PluginSet, PluginStatus, Registration};
use tonic::{Request, Response, Status};

struct IntrospectionService {
    plugins: PluginSet,
    uuid: String,
}

/// The `io.containerd.grpc.v1.introspection` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "introspection", &[], |ctx| {
        let uuid = load_or_create_uuid(ctx.root()).map_err(InitError::failed)?;
        let svc = IntrospectionServer::new(IntrospectionService {
            plugins: ctx.plugins(),
            uuid,
        });
        Ok(berth_grpc::grpc_service!(svc))
    })
}

/// The server UUID is created once and kept in `<root>/io.containerd.grpc.v1.introspection/uuid`,
/// so clients can tell a restarted daemon from a different one.
fn load_or_create_uuid(dir: &Path) -> Result<String, String> {
    let path = dir.join("uuid");
    match std::fs::read_to_string(&path) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => return Ok(s.trim().to_owned()),
        Ok(s) if !s.trim().is_empty() => {
            return Err(format!(
                "{} holds {:?}, which is not a UUID",
                path.display(),
                s.trim()
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let id = uuid::Uuid::new_v4().to_string();
    // Write then rename, so a crash never leaves a half-written UUID.
    let tmp = dir.join(".uuid.tmp");
    std::fs::write(&tmp, &id).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("rename to {}: {e}", path.display()))?;
    Ok(id)
}

fn platform(s: &str) -> Platform {
    let mut parts = s.splitn(3, '/');
    Platform {
        os: parts.next().unwrap_or_default().to_owned(),
        architecture: parts.next().unwrap_or_default().to_owned(),
        variant: parts.next().unwrap_or_default().to_owned(),
        ..Default::default()
    }
}

fn to_pb(rec: &PluginRecord) -> Plugin {
    let init_err = match &rec.status {
        PluginStatus::Ok => None,
        // containerd reports init failures as Unknown with the reason; `ctr` shows "skip" when the
        // message contains "skip plugin".
        PluginStatus::Skip(msg) | PluginStatus::Error(msg) => Some(RpcStatus {
            code: tonic::Code::Unknown as i32,
            message: msg.clone(),
            details: Vec::new(),
        }),
    };
    Plugin {
        r#type: rec.plugin_type.clone(),
        id: rec.id.clone(),
        requires: rec.requires.clone(),
        platforms: rec.platforms.iter().map(|p| platform(p)).collect(),
        exports: rec.exports.clone().into_iter().collect(),
        capabilities: rec.capabilities.clone(),
        init_err,
    }
}

struct Fields<'a>(&'a PluginRecord);

impl Adaptor for Fields<'_> {
    fn field(&self, path: &[String]) -> Vec<String> {
        let rec = self.0;
        match path.first().map(String::as_str) {
            Some("type") => vec![rec.plugin_type.clone()],
            Some("id") => vec![rec.id.clone()],
            Some("platforms") => rec.platforms.clone(),
            Some("capabilities") => rec.capabilities.clone(),
            Some("exports") if path.len() > 1 => rec
                .exports
                .get(&path[1..].join("."))
                .cloned()
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn pidns() -> Result<u64, Status> {
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .map_err(|e| Status::internal(format!("stat /proc/self/ns/pid: {e}")))
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    #[tracing::instrument(skip_all)]
    async fn plugins(
        &self,
        req: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let filters =
            Filters::parse(&req.into_inner().filters).map_err(|e| berth_grpc::to_status(&e))?;
        let plugins = self
            .plugins
            .snapshot()
            .iter()
            .filter(|r| filters.matches(&Fields(r)))
            .map(to_pb)
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    #[tracing::instrument(skip_all)]
    async fn server(&self, _req: Request<()>) -> Result<Response<ServerResponse>, Status> {
        Ok(Response::new(ServerResponse {
            uuid: self.uuid.clone(),
            pid: u64::from(std::process::id()),
            pidns: pidns()?,
            deprecations: Vec::new(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn plugin_info(
        &self,
        _req: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        Err(Status::unimplemented(
            "PluginInfo is not implemented by berthd",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_uuid(&dir.path().join("x")).unwrap();
        let b = load_or_create_uuid(&dir.path().join("x")).unwrap();
        assert_eq!(a, b);
        std::fs::write(dir.path().join("x/uuid"), "garbage").unwrap();
        assert!(load_or_create_uuid(&dir.path().join("x")).is_err());
    }

    #[test]
    fn platform_strings_split() {
        let p = platform("linux/arm/v7");
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.as_str()),
            ("linux", "arm", "v7")
        );
    }
}
