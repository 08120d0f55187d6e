//! A typed client for a shim's `containerd.task.v2.Task` service over ttrpc.

use std::time::Duration;

use prost::Message;
use ttrpc::r#async::Client;

use crate::error::{kind_of_code, rebase_message, Error, Result};
use crate::proto::task as pb;

const SERVICE: &str = "containerd.task.v2.Task";

/// How long an ordinary call may take before berthd gives up on the shim; `Wait` has no limit.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to one shim. Clones share the connection; calls run concurrently on it.
#[derive(Clone)]
pub struct TaskClient {
    inner: Client,
    address: String,
}

impl std::fmt::Debug for TaskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskClient")
            .field("address", &self.address)
            .finish()
    }
}

impl TaskClient {
    /// Connects to the ttrpc address a shim printed (`unix:///run/containerd/s/…`).
    pub async fn connect(address: &str) -> Result<Self> {
        let inner = Client::connect(address)
            .await
            .map_err(|source| Error::Connect {
                address: address.to_owned(),
                source,
            })?;
        Ok(TaskClient {
            inner,
            address: address.to_owned(),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &'static str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        let mut request = ttrpc::proto::Request::new();
        request.service = SERVICE.to_owned();
        request.method = method.to_owned();
        request.payload = req.encode_to_vec();
        request.timeout_nano = timeout.map_or(0, |t| t.as_nanos() as i64);
        let response = self.inner.request(request).await.map_err(|e| match e {
            ttrpc::Error::RpcStatus(status) => {
                let code = status.code.value();
                // The ttrpc crate reports its own deadline as DEADLINE_EXCEEDED.
                if code == 4 {
                    Error::Timeout {
                        method,
                        after_ms: timeout.unwrap_or_default().as_millis(),
                    }
                } else {
                    let kind = kind_of_code(code);
                    Error::Status {
                        kind,
                        message: rebase_message(kind, &status.message),
                    }
                }
            }
            ttrpc::Error::RemoteClosed | ttrpc::Error::LocalClosed | ttrpc::Error::Eof => {
                Error::Closed
            }
            source => Error::Transport { method, source },
        })?;
        Resp::decode(response.payload.as_slice()).map_err(|source| Error::Decode {
            what: method,
            source,
        })
    }

    pub async fn state(&self, id: &str, exec_id: &str) -> Result<pb::StateResponse> {
        let req = pb::StateRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        };
        self.call("State", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn create(&self, req: &pb::CreateTaskRequest) -> Result<pb::CreateTaskResponse> {
        self.call("Create", req, Some(CALL_TIMEOUT)).await
    }

    pub async fn start(&self, id: &str, exec_id: &str) -> Result<pb::StartResponse> {
        let req = pb::StartRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        };
        self.call("Start", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<pb::DeleteResponse> {
        let req = pb::DeleteRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        };
        self.call("Delete", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn pids(&self, id: &str) -> Result<pb::PidsResponse> {
        let req = pb::PidsRequest { id: id.to_owned() };
        self.call("Pids", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn pause(&self, id: &str) -> Result<()> {
        let req = pb::PauseRequest { id: id.to_owned() };
        self.call::<_, ()>("Pause", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn resume(&self, id: &str) -> Result<()> {
        let req = pb::ResumeRequest { id: id.to_owned() };
        self.call::<_, ()>("Resume", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let req = pb::KillRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            signal,
            all,
        };
        self.call::<_, ()>("Kill", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn exec(&self, req: &pb::ExecProcessRequest) -> Result<()> {
        self.call::<_, ()>("Exec", req, Some(CALL_TIMEOUT)).await
    }

    pub async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let req = pb::ResizePtyRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            width,
            height,
        };
        self.call::<_, ()>("ResizePty", &req, Some(CALL_TIMEOUT))
            .await
    }

    pub async fn close_io(&self, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        let req = pb::CloseIoRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            stdin,
        };
        self.call::<_, ()>("CloseIO", &req, Some(CALL_TIMEOUT))
            .await
    }

    pub async fn update(&self, req: &pb::UpdateTaskRequest) -> Result<()> {
        self.call::<_, ()>("Update", req, Some(CALL_TIMEOUT)).await
    }

    /// Blocks until the process exits (no time limit).
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<pb::WaitResponse> {
        let req = pb::WaitRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        };
        self.call("Wait", &req, None).await
    }

    pub async fn stats(&self, id: &str) -> Result<pb::StatsResponse> {
        let req = pb::StatsRequest { id: id.to_owned() };
        self.call("Stats", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn connect_task(&self, id: &str, timeout: Duration) -> Result<pb::ConnectResponse> {
        let req = pb::ConnectRequest { id: id.to_owned() };
        self.call("Connect", &req, Some(timeout)).await
    }

    /// Asks the shim to exit once it has nothing left to serve. The shim may close the connection
    /// before it answers; that counts as done.
    pub async fn shutdown(&self, id: &str) -> Result<()> {
        let req = pb::ShutdownRequest {
            id: id.to_owned(),
            now: false,
        };
        match self
            .call::<_, ()>("Shutdown", &req, Some(CALL_TIMEOUT))
            .await
        {
            Err(Error::Closed) => Ok(()),
            other => other,
        }
    }
}
