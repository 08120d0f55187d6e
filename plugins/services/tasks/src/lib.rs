//! `containerd.services.tasks.v1.Tasks`: a container's running process (its task) and the
//! processes exec'd into it. A thin edge over the runtime (`berth-runtime`): it finds the
//! container record, hands the runtime what the task is made from, and passes the shim's answers
//! (and errors, with the shim's codes) back as containerd does.

use std::sync::Arc;

use berth_api::containerd::v1::types::{Process, ProcessInfo, Status as PbStatus};
use berth_api::tasks::{
    tasks_server::{Tasks, TasksServer},
    CheckpointTaskRequest, CheckpointTaskResponse, CloseIoRequest, CreateTaskRequest,
    CreateTaskResponse, DeleteProcessRequest, DeleteResponse, DeleteTaskRequest,
    ExecProcessRequest, GetRequest, GetResponse, KillRequest, ListPidsRequest, ListPidsResponse,
    ListTasksRequest, ListTasksResponse, MetricsRequest, MetricsResponse, PauseTaskRequest,
    ResizePtyRequest, ResumeTaskRequest, StartRequest, StartResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use berth_api::types::Metric;
use berth_filters::{Adaptor, Filters};
use berth_grpc::{namespace_required, run_lookup, timestamp, to_status};
use berth_metadata::{Container, MetadataDb};
use berth_plugin::{types, Registration};
use berth_runtime::{CreateOpts, Task, TaskManager};
use berth_shim::proto::{task as shim, Mount as ShimMount};
use tonic::{Request, Response, Status};

pub struct TasksService {
    db: Arc<MetadataDb>,
    runtime: Arc<TaskManager>,
}

/// The `io.containerd.grpc.v1.tasks` plugin.
pub fn registration() -> Registration {
    Registration::new(
        types::GRPC,
        "tasks",
        &[types::METADATA, types::RUNTIME_V2],
        |ctx| {
            let db = ctx.get_as::<MetadataDb>(types::METADATA)?;
            let runtime = ctx.get_as::<TaskManager>(types::RUNTIME_V2)?;
            let svc = TasksServer::new(TasksService { db, runtime });
            Ok(berth_grpc::grpc_service!(svc))
        },
    )
}

fn status(e: impl berth_plugin::errdefs::Classify) -> Status {
    to_status(&e)
}

fn empty() -> Response<()> {
    Response::new(())
}

fn ts(nanos: i64) -> Option<prost_types::Timestamp> {
    Some(timestamp(nanos))
}

/// A process's state as containerd reports it (`id` is the container id for the init process,
/// the exec id otherwise).
fn process_pb(id: &str, s: shim::StateResponse) -> Process {
    let status = match s.status {
        1 => PbStatus::Created,
        2 => PbStatus::Running,
        3 => PbStatus::Stopped,
        4 => PbStatus::Paused,
        5 => PbStatus::Pausing,
        _ => PbStatus::Unknown,
    };
    Process {
        container_id: String::new(),
        id: id.to_owned(),
        pid: s.pid,
        status: status as i32,
        stdin: s.stdin,
        stdout: s.stdout,
        stderr: s.stderr,
        terminal: s.terminal,
        exit_status: s.exit_status,
        exited_at: s.exited_at,
    }
}

/// The fields containerd's task filters see (`ctr tasks metrics` sends `id==…`).
struct Fields<'a>(&'a Task);

impl Adaptor for Fields<'_> {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path.first().map(String::as_str) {
            Some("id") if path.len() == 1 => vec![self.0.id.clone()],
            Some("namespace") if path.len() == 1 => vec![self.0.namespace.clone()],
            Some("runtime") if path.len() == 1 => vec![self.0.runtime.clone()],
            _ => Vec::new(),
        }
    }
}

impl TasksService {
    async fn container(&self, ns: &str, id: &str) -> Result<Container, Status> {
        run_lookup(|| self.db.get_container(ns, id))
    }

    /// The task of container `id`: the container must exist, then its task.
    async fn task(&self, ns: &str, id: &str) -> Result<Arc<Task>, Status> {
        self.container(ns, id).await?;
        self.runtime
            .get(ns, id)
            .ok_or_else(|| Status::not_found(format!("task {id} not found")))
    }
}

#[tonic::async_trait]
impl Tasks for TasksService {
    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id))]
    async fn create(
        &self,
        req: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let container = self.container(&ns, &r.container_id).await?;
        if r.checkpoint.is_some() {
            return Err(Status::unimplemented(
                "restoring a task from a checkpoint is not supported by berthd",
            ));
        }
        let spec = container.spec.map(|s| s.value).unwrap_or_default();
        let runtime = if r.runtime_path.is_empty() {
            container.runtime.name.clone()
        } else {
            r.runtime_path.clone()
        };
        let any = |a: berth_metadata::AnyValue| prost_types::Any {
            type_url: a.type_url,
            value: a.value,
        };
        let opts = CreateOpts {
            spec,
            rootfs: r
                .rootfs
                .into_iter()
                .map(|m| ShimMount {
                    r#type: m.r#type,
                    source: m.source,
                    target: m.target,
                    options: m.options,
                })
                .collect(),
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            terminal: r.terminal,
            runtime,
            runtime_options: container.runtime.options.map(any),
            task_options: r.options,
        };
        let task = self
            .runtime
            .create(&ns, &r.container_id, opts)
            .await
            .map_err(status)?;
        let state = task
            .client()
            .state(&r.container_id, "")
            .await
            .map_err(status)?;
        Ok(Response::new(CreateTaskResponse {
            container_id: r.container_id,
            pid: state.pid,
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id))]
    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let task = self.task(&ns, &r.container_id).await?;
        let started = task
            .client()
            .start(&r.container_id, &r.exec_id)
            .await
            .map_err(status)?;
        Ok(Response::new(StartResponse { pid: started.pid }))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id))]
    async fn delete(
        &self,
        req: Request<DeleteTaskRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = namespace_required(&req)?;
        let id = req.into_inner().container_id;
        self.task(&ns, &id).await?;
        let exit = self.runtime.delete(&ns, &id).await.map_err(status)?;
        Ok(Response::new(DeleteResponse {
            id,
            pid: exit.pid,
            exit_status: exit.status,
            exited_at: ts(exit.exited_at),
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id, exec = %req.get_ref().exec_id))]
    async fn delete_process(
        &self,
        req: Request<DeleteProcessRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        if r.exec_id.is_empty() {
            return Err(Status::invalid_argument(
                "exec id cannot be empty: invalid argument",
            ));
        }
        let task = self.task(&ns, &r.container_id).await?;
        let deleted = task
            .client()
            .delete(&r.container_id, &r.exec_id)
            .await
            .map_err(status)?;
        Ok(Response::new(DeleteResponse {
            id: r.exec_id,
            pid: deleted.pid,
            exit_status: deleted.exit_status,
            exited_at: deleted.exited_at,
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id))]
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let task = self.task(&ns, &r.container_id).await?;
        let state = task
            .client()
            .state(&r.container_id, &r.exec_id)
            .await
            .map_err(status)?;
        let id = if r.exec_id.is_empty() {
            &r.container_id
        } else {
            &r.exec_id
        };
        Ok(Response::new(GetResponse {
            process: Some(process_pb(id, state)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ns = namespace_required(&req)?;
        let mut tasks = Vec::new();
        for task in self.runtime.list(&ns) {
            match task.client().state(&task.id, "").await {
                Ok(state) => tasks.push(process_pb(&task.id, state)),
                // Deleted meanwhile, or its shim is going: not a task to list.
                Err(e) if e.is_not_found() || e.is_closed() => {}
                Err(e) => {
                    tracing::warn!(id = %task.id, error = %e, "task state");
                    tasks.push(Process {
                        id: task.id.clone(),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id, signal = req.get_ref().signal))]
    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let task = self.task(&ns, &r.container_id).await?;
        task.client()
            .kill(&r.container_id, &r.exec_id, r.signal, r.all)
            .await
            .map_err(status)?;
        Ok(empty())
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id, exec = %req.get_ref().exec_id))]
    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        if r.exec_id.is_empty() {
            return Err(Status::invalid_argument("exec id cannot be empty"));
        }
        let task = self.task(&ns, &r.container_id).await?;
        let request = shim::ExecProcessRequest {
            id: r.container_id,
            exec_id: r.exec_id,
            terminal: r.terminal,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            spec: r.spec,
        };
        task.client().exec(&request).await.map_err(status)?;
        Ok(empty())
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id))]
    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let task = self.task(&ns, &r.container_id).await?;
        task.client()
            .resize_pty(&r.container_id, &r.exec_id, r.width, r.height)
            .await
            .map_err(status)?;
        Ok(empty())
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id))]
    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let task = self.task(&ns, &r.container_id).await?;
        task.client()
            .close_io(&r.container_id, &r.exec_id, r.stdin)
            .await
            .map_err(status)?;
        Ok(empty())
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id))]
    async fn pause(&self, req: Request<PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let id = req.into_inner().container_id;
        let task = self.task(&ns, &id).await?;
        task.client().pause(&id).await.map_err(status)?;
        Ok(empty())
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id))]
    async fn resume(&self, req: Request<ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let id = req.into_inner().container_id;
        let task = self.task(&ns, &id).await?;
        task.client().resume(&id).await.map_err(status)?;
        Ok(empty())
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id))]
    async fn list_pids(
        &self,
        req: Request<ListPidsRequest>,
    ) -> Result<Response<ListPidsResponse>, Status> {
        let ns = namespace_required(&req)?;
        let id = req.into_inner().container_id;
        let task = self.task(&ns, &id).await?;
        let pids = task.client().pids(&id).await.map_err(status)?;
        let processes = pids
            .processes
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                info: p.info,
            })
            .collect();
        Ok(Response::new(ListPidsResponse { processes }))
    }

    #[tracing::instrument(skip_all)]
    async fn checkpoint(
        &self,
        _req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        Err(Status::unimplemented(
            "checkpointing tasks is not supported by berthd",
        ))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id))]
    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let task = self.task(&ns, &r.container_id).await?;
        let request = shim::UpdateTaskRequest {
            id: r.container_id,
            resources: r.resources,
            annotations: r.annotations,
        };
        task.client().update(&request).await.map_err(status)?;
        Ok(empty())
    }

    #[tracing::instrument(skip_all)]
    async fn metrics(
        &self,
        req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        let filters = Filters::parse(&req.get_ref().filters).map_err(|e| to_status(&e))?;
        let mut metrics = Vec::new();
        // As containerd: tasks of every namespace that match the filters.
        for task in self.runtime.all() {
            if !filters.matches(&Fields(&task)) {
                continue;
            }
            match task.client().stats(&task.id).await {
                Ok(stats) => metrics.push(Metric {
                    timestamp: ts(berth_metadata::now_nanos()),
                    id: task.id.clone(),
                    data: stats.stats,
                }),
                Err(e) if e.is_not_found() || e.is_closed() => {}
                Err(e) => return Err(status(e)),
            }
        }
        Ok(Response::new(MetricsResponse { metrics }))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().container_id, exec = %req.get_ref().exec_id))]
    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let task = self.task(&ns, &r.container_id).await?;
        let exit = task.wait(&r.exec_id).await.map_err(status)?;
        Ok(Response::new(WaitResponse {
            exit_status: exit.status,
            exited_at: ts(exit.exited_at),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_states_map_to_containerd_statuses() {
        let state = |status| shim::StateResponse {
            status,
            pid: 7,
            ..Default::default()
        };
        assert_eq!(process_pb("c", state(2)).status, PbStatus::Running as i32);
        assert_eq!(process_pb("c", state(3)).status, PbStatus::Stopped as i32);
        assert_eq!(process_pb("c", state(4)).status, PbStatus::Paused as i32);
        assert_eq!(process_pb("c", state(42)).status, PbStatus::Unknown as i32);
        assert_eq!(process_pb("e1", state(1)).id, "e1");
    }
}
