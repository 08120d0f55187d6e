//! containerd's `containerd.task.v2.Task` service over ttrpc: each method decodes its request,
//! calls [`Shim`], encodes the answer or turns the error into a ttrpc status.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use berth_shim::proto::task as pb;
use prost::Message;
use ttrpc::proto::ResponseInit;
use ttrpc::r#async::{MethodHandler, Service, TtrpcContext};

use crate::error::Error;
use crate::task::Shim;

fn status(code: ttrpc::Code, message: String) -> ttrpc::Response {
    ttrpc::Response::init_status(ttrpc::get_status(code, message))
}

fn reply<M: Message>(r: Result<M, Error>) -> ttrpc::Response {
    match r {
        Ok(m) => {
            let mut resp = ttrpc::Response::init_status(ttrpc::get_status(ttrpc::Code::OK, ""));
            resp.payload = m.encode_to_vec();
            resp
        }
        Err(e) => status(e.code(), e.to_string()),
    }
}

struct Method {
    name: &'static str,
    shim: Arc<Shim>,
    trimmer: berth_idle_trim::Trimmer,
}

macro_rules! decode {
    ($t:ty, $req:expr) => {
        match <$t>::decode($req.payload.as_slice()) {
            Ok(r) => r,
            Err(e) => {
                return Ok(status(
                    ttrpc::Code::INVALID_ARGUMENT,
                    format!("decode request: {e}"),
                ))
            }
        }
    };
}

#[async_trait]
impl MethodHandler for Method {
    async fn handler(
        &self,
        _ctx: TtrpcContext,
        req: ttrpc::Request,
    ) -> ttrpc::Result<ttrpc::Response> {
        let s = &self.shim;
        self.trimmer.touch();
        let response = match self.name {
            "Create" => reply(s.create(decode!(pb::CreateTaskRequest, req))),
            "Start" => reply(s.start(decode!(pb::StartRequest, req))),
            "State" => reply(s.state(decode!(pb::StateRequest, req))),
            "Delete" => reply(s.delete(decode!(pb::DeleteRequest, req)).await),
            "Pids" => reply(s.pids(decode!(pb::PidsRequest, req))),
            "Pause" => reply(s.pause(&decode!(pb::PauseRequest, req).id)),
            "Resume" => reply(s.resume(&decode!(pb::ResumeRequest, req).id)),
            "Kill" => reply(s.kill(decode!(pb::KillRequest, req))),
            "Exec" => reply(s.exec(decode!(pb::ExecProcessRequest, req))),
            "ResizePty" => reply(s.resize_pty(decode!(pb::ResizePtyRequest, req))),
            "CloseIO" => reply(s.close_io(decode!(pb::CloseIoRequest, req))),
            "Update" => reply(s.update(decode!(pb::UpdateTaskRequest, req))),
            "Stats" => reply(s.stats(&decode!(pb::StatsRequest, req).id)),
            "Connect" => reply(s.connect(&decode!(pb::ConnectRequest, req).id)),
            "Shutdown" => reply(s.shutdown(&decode!(pb::ShutdownRequest, req).id)),
            "Wait" => {
                let r = decode!(pb::WaitRequest, req);
                match s.waiter(&r.id, &r.exec_id) {
                    Err(e) => status(e.code(), e.to_string()),
                    Ok(mut rx) => match rx.wait_for(Option::is_some).await {
                        Ok(exit) => {
                            let exit = exit.unwrap_or(crate::task::Exit {
                                code: 255,
                                at: crate::publish::now(),
                            });
                            reply::<pb::WaitResponse>(Ok(pb::WaitResponse {
                                exit_status: exit.code,
                                exited_at: Some(exit.at),
                            }))
                        }
                        // The process record went away (deleted) without an exit.
                        Err(_) => status(ttrpc::Code::NOT_FOUND, "process deleted".into()),
                    },
                }
            }
            "Checkpoint" => status(
                ttrpc::Code::UNIMPLEMENTED,
                "checkpoint is not supported by containerd-shim-berth-v1".into(),
            ),
            other => status(
                ttrpc::Code::UNIMPLEMENTED,
                format!("{other} is not implemented"),
            ),
        };
        self.trimmer.touch();
        Ok(response)
    }
}

/// The service, ready for `Server::register_service`.
pub fn task_service(
    shim: Arc<Shim>,
    trimmer: berth_idle_trim::Trimmer,
) -> HashMap<String, Service> {
    let mut methods: HashMap<String, Box<dyn MethodHandler + Send + Sync>> = HashMap::new();
    for name in [
        "Create",
        "Start",
        "State",
        "Delete",
        "Pids",
        "Pause",
        "Resume",
        "Kill",
        "Exec",
        "ResizePty",
        "CloseIO",
        "Update",
        "Stats",
        "Connect",
        "Shutdown",
        "Wait",
        "Checkpoint",
    ] {
        methods.insert(
            name.to_owned(),
            Box::new(Method {
                name,
                shim: Arc::clone(&shim),
                trimmer: trimmer.clone(),
            }),
        );
    }
    HashMap::from([(
        "containerd.task.v2.Task".to_owned(),
        Service {
            methods,
            streams: HashMap::new(),
        },
    )])
}
