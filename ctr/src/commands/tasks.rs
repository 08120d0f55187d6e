//! `bctr tasks …` (alias `t`): ctr's task commands over the Tasks service — list, start, kill,
//! ps, exec, pause, resume, metrics, delete and attach.

use std::path::PathBuf;

use bctr::gojson::go_time_string;
use bctr::protojson;
use bctr::signals::parse_signal;
use bctr::spec::{self, PROCESS_TYPE_URL};
use bctr::table::TabWriter;
use berth_api::containerd::v1::types::{Process, Status};
use berth_api::containers::{containers_client::ContainersClient, Container, GetContainerRequest};
use berth_api::tasks::{
    tasks_client::TasksClient, DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest,
    GetRequest, KillRequest, ListPidsRequest, ListTasksRequest, MetricsRequest, PauseTaskRequest,
    ResumeTaskRequest, StartRequest, WaitRequest,
};
use clap::{Args, Subcommand};
use oci_spec::runtime::Process as ProcessSpec;
use tonic::transport::Channel;
use tonic::Code;

use super::output::{print_rows, rfc3339, ListFormat};
use super::run::{self, exit_with, TaskIo, STOP_SIGNAL_LABEL};
use super::stdio::{self, Fifos, Io, RawTerminal};
use super::{CmdError, Ctx};

/// One task in `tasks ls --format json`.
#[derive(serde::Serialize)]
struct TaskRow {
    task: String,
    pid: u32,
    status: String,
    exit_status: u32,
    exited_at: Option<String>,
}

#[derive(Subcommand)]
pub enum TasksCommand {
    /// List tasks.
    #[command(alias = "ls")]
    List {
        /// Print only the task id (wins over --format).
        #[arg(long, short = 'q')]
        quiet: bool,
        #[command(flatten)]
        format: ListFormat,
    },
    /// Start a container that has been created.
    Start(StartArgs),
    /// Signal a container (default: its stop signal, else SIGTERM).
    Kill {
        /// Signal to send (name or number).
        #[arg(long, short = 's')]
        signal: Option<String>,
        /// Process ID to kill.
        #[arg(long = "exec-id")]
        exec_id: Option<String>,
        /// Send the signal to all processes inside the container (ctr's `-a` is bctr's global
        /// `--address`, so only the long form).
        #[arg(long)]
        all: bool,
        container: String,
    },
    /// List processes for a container.
    Ps { container: String },
    /// Execute an additional process in a running container.
    #[command(after_help = super::examples::EXEC)]
    Exec(ExecArgs),
    /// Pause a running container.
    Pause { container: String },
    /// Resume a paused container.
    Resume { container: String },
    /// A single data point of a task's metrics.
    #[command(alias = "metric")]
    Metrics {
        /// "table" or "json".
        #[arg(long, default_value = "table")]
        format: String,
        container: String,
    },
    /// Delete one or more tasks.
    #[command(aliases = ["rm", "del", "remove"])]
    Delete {
        /// Force delete task process.
        #[arg(long, short = 'f')]
        force: bool,
        /// Process ID to delete.
        #[arg(long = "exec-id")]
        exec_id: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Attach to the IO of a running container.
    Attach { container: String },
}

#[derive(Args)]
pub struct StartArgs {
    /// Send all IO to /dev/null.
    #[arg(long = "null-io")]
    null_io: bool,
    /// Send the output to this URI (binary:///path/to/logger?k=v, file:///path) instead.
    #[arg(long = "log-uri")]
    log_uri: Option<String>,
    /// Directory for the IO FIFOs.
    #[arg(long = "fifo-dir")]
    fifo_dir: Option<PathBuf>,
    /// Write the task's pid to this file.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Detach from the task after it has started.
    #[arg(long, short = 'd')]
    detach: bool,
    container: String,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Working directory of the new process.
    #[arg(long)]
    cwd: Option<String>,
    /// Allocate a TTY.
    #[arg(long, short = 't')]
    tty: bool,
    /// Detach after the process has started.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Exec-specific id for the process.
    #[arg(long = "exec-id", required = true)]
    exec_id: String,
    /// Directory for the IO FIFOs.
    #[arg(long = "fifo-dir")]
    fifo_dir: Option<PathBuf>,
    /// User id or name.
    #[arg(long, short = 'u')]
    user: Option<String>,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// A `Status` as Go's enum prints it (`RUNNING`).
pub fn status_name(s: i32) -> &'static str {
    match Status::try_from(s) {
        Ok(Status::Created) => "CREATED",
        Ok(Status::Running) => "RUNNING",
        Ok(Status::Stopped) => "STOPPED",
        Ok(Status::Paused) => "PAUSED",
        Ok(Status::Pausing) => "PAUSING",
        _ => "UNKNOWN",
    }
}

/// A container's record (its NotFound is the daemon's message).
pub async fn load_container(ctx: &Ctx, id: &str) -> Result<Container, CmdError> {
    if id.is_empty() {
        return Err(CmdError::Usage("container id must be provided".into()));
    }
    Ok(ContainersClient::new(ctx.channel.clone())
        .get(ctx.request(GetContainerRequest { id: id.to_owned() }))
        .await?
        .into_inner()
        .container
        .unwrap_or_default())
}

/// The state of a task's process (`exec_id` empty: the init process).
pub async fn get_process(ctx: &Ctx, id: &str, exec_id: &str) -> Result<Process, tonic::Status> {
    Ok(TasksClient::new(ctx.channel.clone())
        .get(ctx.request(GetRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        }))
        .await?
        .into_inner()
        .process
        .unwrap_or_default())
}

/// The container's process spec (the `process` of its runtime spec).
fn process_spec(c: &Container) -> Result<ProcessSpec, CmdError> {
    let bytes = c.spec.as_ref().map(|a| a.value.as_slice()).unwrap_or(b"");
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| CmdError::Failed(format!("container {}: invalid spec: {e}", c.id)))?;
    let p = v
        .get("process")
        .cloned()
        .ok_or_else(|| CmdError::Failed(format!("container {}: spec has no process", c.id)))?;
    serde_json::from_value(p)
        .map_err(|e| CmdError::Failed(format!("container {}: invalid process spec: {e}", c.id)))
}

fn spec_terminal(c: &Container) -> bool {
    process_spec(c)
        .ok()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
}

pub async fn run(ctx: &Ctx, cmd: TasksCommand) -> Result<(), CmdError> {
    let mut tasks = TasksClient::new(ctx.channel.clone());
    match cmd {
        TasksCommand::List { quiet, format } => {
            let list = tasks
                .list(ctx.request(ListTasksRequest::default()))
                .await?
                .into_inner()
                .tasks;
            if quiet {
                for t in &list {
                    println!("{}", t.id);
                }
                return Ok(());
            }
            let rows: Vec<TaskRow> = list
                .iter()
                .map(|t| TaskRow {
                    task: t.id.clone(),
                    pid: t.pid,
                    status: status_name(t.status).to_string(),
                    exit_status: t.exit_status,
                    exited_at: rfc3339(t.exited_at.as_ref()),
                })
                .collect();
            print_rows(format, &rows, |rows| {
                let mut text = String::from("TASK\tPID\tSTATUS\t\n");
                for t in rows {
                    text.push_str(&format!("{}\t{}\t{}\n", t.task, t.pid, t.status));
                }
                LIST_TABLE.print(&text);
            });
        }
        TasksCommand::Start(a) => {
            let c = load_container(ctx, &a.container).await?;
            let terminal = spec_terminal(&c);
            return run::start_task(
                ctx,
                &c,
                TaskIo {
                    terminal,
                    null_io: a.null_io,
                    log_uri: a.log_uri,
                    fifo_dir: a.fifo_dir,
                    detach: a.detach,
                    pid_file: a.pid_file,
                },
            )
            .await;
        }
        TasksCommand::Kill {
            signal,
            exec_id,
            all,
            container,
        } => {
            let exec_id = exec_id.unwrap_or_default();
            if all && !exec_id.is_empty() {
                return Err(CmdError::Usage(
                    "specify an exec-id or all; not both".into(),
                ));
            }
            let c = load_container(ctx, &container).await?;
            let raw = match signal {
                Some(s) if !s.is_empty() => s,
                _ => c
                    .labels
                    .get(STOP_SIGNAL_LABEL)
                    .cloned()
                    .unwrap_or_else(|| "SIGTERM".to_owned()),
            };
            let sig = parse_signal(&raw).map_err(|e| CmdError::Usage(e.to_string()))?;
            get_process(ctx, &c.id, "").await?;
            tasks
                .kill(ctx.request(KillRequest {
                    container_id: c.id,
                    exec_id,
                    signal: sig as u32,
                    all,
                }))
                .await?;
        }
        TasksCommand::Ps { container } => {
            let c = load_container(ctx, &container).await?;
            let procs = tasks
                .list_pids(ctx.request(ListPidsRequest { container_id: c.id }))
                .await?
                .into_inner()
                .processes;
            let mut text = String::from("PID\tINFO\n");
            for p in &procs {
                let info = match &p.info {
                    None => "-".to_owned(),
                    Some(any) => process_details(any),
                };
                text.push_str(&format!("{}\t{info}\n", p.pid));
            }
            PS_TABLE.print(&text);
        }
        TasksCommand::Exec(a) => return exec(ctx, a).await,
        TasksCommand::Pause { container } => {
            let c = load_container(ctx, &container).await?;
            get_process(ctx, &c.id, "").await?;
            tasks
                .pause(ctx.request(PauseTaskRequest { container_id: c.id }))
                .await?;
        }
        TasksCommand::Resume { container } => {
            let c = load_container(ctx, &container).await?;
            get_process(ctx, &c.id, "").await?;
            tasks
                .resume(ctx.request(ResumeTaskRequest { container_id: c.id }))
                .await?;
        }
        TasksCommand::Metrics { format, container } => {
            return metrics(ctx, &mut tasks, &format, &container).await
        }
        TasksCommand::Delete {
            force,
            exec_id,
            containers,
        } => return delete(ctx, &mut tasks, force, exec_id, containers).await,
        TasksCommand::Attach { container } => return attach(ctx, &container).await,
    }
    Ok(())
}

/// `tabwriter.NewWriter(os.Stdout, 4, 8, 4, ' ', 0)` (`tasks ls`, `containers ls`).
pub const LIST_TABLE: TabWriter = TabWriter {
    minwidth: 4,
    tabwidth: 8,
    padding: 4,
    padchar: ' ',
};
/// `tabwriter.NewWriter(os.Stdout, 1, 8, 4, ' ', 0)` (`tasks ps`, `tasks metrics`).
const PS_TABLE: TabWriter = TabWriter {
    minwidth: 1,
    tabwidth: 8,
    padding: 4,
    padchar: ' ',
};

/// runc's `ProcessDetails` (the exec id of a pid), as ctr prints it with `%+v`.
fn process_details(any: &prost_types::Any) -> String {
    use prost::Message;
    #[derive(Clone, PartialEq, prost::Message)]
    struct ProcessDetails {
        #[prost(string, tag = "1")]
        exec_id: String,
    }
    if any.type_url.ends_with("containerd.runc.v1.ProcessDetails") {
        if let Ok(d) = ProcessDetails::decode(any.value.as_slice()) {
            return format!(
                "&ProcessDetails{{ExecID:{},XXX_unrecognized:[],}}",
                d.exec_id
            );
        }
    }
    format!("{{{}}}", any.type_url)
}

async fn metrics(
    ctx: &Ctx,
    tasks: &mut TasksClient<Channel>,
    format: &str,
    container: &str,
) -> Result<(), CmdError> {
    let c = load_container(ctx, container).await?;
    get_process(ctx, &c.id, "").await?;
    let list = tasks
        .metrics(ctx.request(MetricsRequest {
            filters: vec![format!("id=={}", c.id)],
        }))
        .await?
        .into_inner()
        .metrics;
    let metric = list
        .into_iter()
        .next()
        .ok_or_else(|| CmdError::Failed("no metrics received".into()))?;
    let data = metric.data.clone().unwrap_or_default();
    let decoded = protojson::decode_metrics(&data).map_err(|e| CmdError::Failed(e.to_string()))?;
    match format {
        "table" => {
            let mut text = String::from("ID\tTIMESTAMP\t\n");
            text.push_str(&format!(
                "{}\t{}\t\n\n",
                metric.id,
                go_time_string(metric.timestamp.as_ref())
            ));
            text.push_str("METRIC\tVALUE\t\n");
            for (k, v) in decoded.table_rows() {
                text.push_str(&format!("{k}\t{v}\t\n"));
            }
            PS_TABLE.print(&text);
        }
        "json" => println!("{}", decoded.go_json().indent("  ")),
        _ => return Err(CmdError::Usage("format must be table or json".into())),
    }
    Ok(())
}

/// Kills a process with SIGKILL and waits for it (containerd's `WithProcessKill`).
async fn kill_and_wait(ctx: &Ctx, id: &str, exec_id: &str) -> Result<(), CmdError> {
    let mut tasks = TasksClient::new(ctx.channel.clone());
    let wait = {
        let (ctx, id, exec_id) = (ctx.clone(), id.to_owned(), exec_id.to_owned());
        tokio::spawn(async move {
            TasksClient::new(ctx.channel.clone())
                .wait(ctx.request(WaitRequest {
                    container_id: id,
                    exec_id,
                }))
                .await
        })
    };
    match tasks
        .kill(ctx.request(KillRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            signal: nix::libc::SIGKILL as u32,
            all: exec_id.is_empty(),
        }))
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == Code::NotFound || s.code() == Code::FailedPrecondition => {}
        Err(s) => {
            wait.abort();
            return Err(s.into());
        }
    }
    let _ = wait.await;
    Ok(())
}

async fn delete(
    ctx: &Ctx,
    tasks: &mut TasksClient<Channel>,
    force: bool,
    exec_id: Option<String>,
    containers: Vec<String>,
) -> Result<(), CmdError> {
    if let Some(exec_id) = exec_id.filter(|e| !e.is_empty()) {
        let c = load_container(ctx, containers.first().map_or("", String::as_str)).await?;
        let p = get_process(ctx, &c.id, &exec_id).await?;
        check_stopped(&p, force)?;
        if force {
            kill_and_wait(ctx, &c.id, &exec_id).await?;
        }
        let r = tasks
            .delete_process(ctx.request(DeleteProcessRequest {
                container_id: c.id,
                exec_id,
            }))
            .await?
            .into_inner();
        stdio::remove_fifo_paths(&[&p.stdin, &p.stdout, &p.stderr]);
        return exit_with(r.exit_status);
    }
    let mut first: Option<CmdError> = None;
    for target in &containers {
        let result = async {
            let c = load_container(ctx, target).await?;
            let p = get_process(ctx, &c.id, "").await?;
            check_stopped(&p, force)?;
            if force {
                kill_and_wait(ctx, &c.id, "").await?;
            }
            let r = tasks
                .delete(ctx.request(DeleteTaskRequest {
                    container_id: c.id.clone(),
                }))
                .await?
                .into_inner();
            stdio::remove_fifo_paths(&[&p.stdin, &p.stdout, &p.stderr]);
            if r.exit_status != 0 {
                eprintln!(
                    "bctr: warning: task {} exit with non-zero exit code {}",
                    c.id, r.exit_status
                );
            }
            Ok::<(), CmdError>(())
        }
        .await;
        if let Err(e) = result {
            eprintln!("bctr: unable to delete {target}: {e}");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// containerd's client refuses to delete a live process unless forced.
fn check_stopped(p: &Process, force: bool) -> Result<(), CmdError> {
    let status = Status::try_from(p.status).unwrap_or(Status::Unknown);
    if !force && matches!(status, Status::Running | Status::Paused | Status::Pausing) {
        return Err(CmdError::Failed(format!(
            "task must be stopped before deletion: {}: failed precondition",
            status_name(p.status).to_ascii_lowercase()
        )));
    }
    Ok(())
}

async fn exec(ctx: &Ctx, a: ExecArgs) -> Result<(), CmdError> {
    let c = load_container(ctx, &a.container).await?;
    let mut pspec = process_spec(&c)?;
    if let Some(user) = &a.user {
        pspec = exec_user(ctx, &c, pspec, user).await?;
    }
    pspec.set_terminal(Some(a.tty));
    pspec.set_args(Some(a.command.clone()));
    if let Some(cwd) = &a.cwd {
        pspec.set_cwd(PathBuf::from(cwd));
    }
    get_process(ctx, &c.id, "").await?;
    let _raw = if a.tty {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let root = a
        .fifo_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(stdio::DEFAULT_FIFO_DIR));
    let fifos = Fifos::create(&root, &a.exec_id, a.tty)?;
    let result = exec_io(ctx, &c, &a, &pspec, &fifos).await;
    if !a.detach || result.is_err() {
        fifos.remove();
    }
    result
}

async fn exec_io(
    ctx: &Ctx,
    c: &Container,
    a: &ExecArgs,
    pspec: &ProcessSpec,
    fifos: &Fifos,
) -> Result<(), CmdError> {
    let mut tasks = TasksClient::new(ctx.channel.clone());
    let mut io = Io::attach(fifos, true)?;
    let json = spec::process_to_json(pspec).map_err(|e| CmdError::Failed(e.to_string()))?;
    tasks
        .exec(ctx.request(ExecProcessRequest {
            container_id: c.id.clone(),
            stdin: fifos.stdin.clone(),
            stdout: fifos.stdout.clone(),
            stderr: fifos.stderr.clone(),
            terminal: fifos.terminal,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.to_owned(),
                value: json,
            }),
            exec_id: a.exec_id.clone(),
        }))
        .await?;
    let delete = |ctx: Ctx, id: String, exec_id: String| async move {
        let _ = TasksClient::new(ctx.channel.clone())
            .delete_process(ctx.request(DeleteProcessRequest {
                container_id: id,
                exec_id,
            }))
            .await;
    };
    let waiter = {
        let (ctx, id, exec_id) = (ctx.clone(), c.id.clone(), a.exec_id.clone());
        tokio::spawn(async move {
            TasksClient::new(ctx.channel.clone())
                .wait(ctx.request(WaitRequest {
                    container_id: id,
                    exec_id,
                }))
                .await
        })
    };
    if let Err(s) = tasks
        .start(ctx.request(StartRequest {
            container_id: c.id.clone(),
            exec_id: a.exec_id.clone(),
        }))
        .await
    {
        waiter.abort();
        delete(ctx.clone(), c.id.clone(), a.exec_id.clone()).await;
        return Err(s.into());
    }
    if a.detach {
        waiter.abort();
        return Ok(());
    }
    io.release();
    io.close_stdin_on_eof(ctx, &c.id, &a.exec_id);
    let status = stdio::wait_attached(ctx, &c.id, &a.exec_id, a.tty, waiter).await;
    io.wait().await;
    delete(ctx.clone(), c.id.clone(), a.exec_id.clone()).await;
    match status {
        Ok(Ok(r)) => exit_with(r.into_inner().exit_status),
        Ok(Err(s)) => Err(s.into()),
        Err(e) => Err(CmdError::Failed(format!("waiting for the process: {e}"))),
    }
}

/// `oci.WithUser` for an exec: resolved against the container's root file system.
async fn exec_user(
    ctx: &Ctx,
    c: &Container,
    pspec: ProcessSpec,
    user: &str,
) -> Result<ProcessSpec, CmdError> {
    use berth_api::snapshots::{snapshots_client::SnapshotsClient, MountsRequest};
    let mounts = SnapshotsClient::new(ctx.channel.clone())
        .mounts(ctx.request(MountsRequest {
            snapshotter: c.snapshotter.clone(),
            key: c.snapshot_key.clone(),
        }))
        .await?
        .into_inner()
        .mounts;
    let user = user.to_owned();
    tokio::task::spawn_blocking(move || {
        let mounts: Vec<berth_mount::Mount> = mounts
            .into_iter()
            .map(|m| berth_mount::Mount {
                mount_type: m.r#type,
                source: m.source,
                target: m.target,
                options: m.options,
            })
            .collect();
        let tmp = berth_mount::TempMount::new(&mounts).map_err(|e| {
            CmdError::Failed(format!("failed to mount the container's rootfs: {e}"))
        })?;
        let mut s = oci_spec::runtime::Spec::default();
        s.set_process(Some(pspec));
        spec::with_user(&mut s, &user, tmp.path()).map_err(|e| CmdError::Failed(e.to_string()))?;
        s.process()
            .clone()
            .ok_or_else(|| CmdError::Failed("spec lost its process".into()))
    })
    .await
    .map_err(|e| CmdError::Failed(format!("resolving the user failed: {e}")))?
}

async fn attach(ctx: &Ctx, container: &str) -> Result<(), CmdError> {
    let c = load_container(ctx, container).await?;
    let terminal = spec_terminal(&c);
    let _raw = if terminal {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let p = get_process(ctx, &c.id, "").await?;
    let fifos = Fifos {
        dir: None,
        stdin: p.stdin.clone(),
        stdout: p.stdout.clone(),
        stderr: p.stderr.clone(),
        terminal: p.terminal,
    };
    let mut io = Io::attach(&fifos, true)?;
    io.release();
    let waiter = {
        let (ctx, id) = (ctx.clone(), c.id.clone());
        tokio::spawn(async move {
            TasksClient::new(ctx.channel.clone())
                .wait(ctx.request(WaitRequest {
                    container_id: id,
                    exec_id: String::new(),
                }))
                .await
        })
    };
    // ctr's attach copies stdin but never closes the task's: another attach may follow.
    let status = stdio::wait_attached(ctx, &c.id, "", terminal, waiter).await;
    io.wait().await;
    let _ = TasksClient::new(ctx.channel.clone())
        .delete(ctx.request(DeleteTaskRequest {
            container_id: c.id.clone(),
        }))
        .await;
    stdio::remove_fifo_paths(&[&p.stdin, &p.stdout, &p.stderr]);
    match status {
        Ok(Ok(r)) => exit_with(r.into_inner().exit_status),
        Ok(Err(s)) => Err(s.into()),
        Err(e) => Err(CmdError::Failed(format!("waiting for the task: {e}"))),
    }
}
