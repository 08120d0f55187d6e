//! The client side of containerd's Transfer API, shared by `bctr images pull`, `push` and
//! `tag`: the streams opened on the Streaming service (progress, and credentials when the
//! daemon asks for them), the Transfer call, and the live display of the progress the daemon
//! streams back.
//!
//! As containerd's client: a progress stream is opened on the Streaming service (StreamInit,
//! then the server's Empty), then Transfer is called naming that stream; the server sends
//! `containerd.types.transfer.Progress` on it and closes it when done. With `--user` a second
//! stream carries the credentials the daemon asks for (AuthRequest → AuthResponse).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use berth_api::streaming::{streaming_client::StreamingClient, StreamInit};
use berth_api::transfer::{transfer_client::TransferClient, TransferOptions, TransferRequest};
use berth_api::types::transfer as tt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::{CmdError, Ctx};

/// How long the progress display waits for the daemon to end the stream after the transfer
/// returned (the last events are on their way).
const PROGRESS_TAIL: Duration = Duration::from_secs(10);

pub(super) const OCI_REGISTRY: &str = "containerd.types.transfer.OCIRegistry";
pub(super) const IMAGE_STORE: &str = "containerd.types.transfer.ImageStore";

/// A name for this invocation's streams, unique on the daemon.
fn unique(kind: &str) -> String {
    format!(
        "{kind}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// The stream answering the daemon's credential requests with `--user`; it ends when dropped.
pub(super) struct AuthStream {
    id: String,
    task: tokio::task::JoinHandle<()>,
}

impl AuthStream {
    pub(super) async fn open(ctx: &Ctx, user: String) -> Result<AuthStream, CmdError> {
        let id = unique("auth");
        let (tx, inbound) = open_stream(ctx, &id).await?;
        let task = tokio::spawn(answer_auth(tx, inbound, user));
        Ok(AuthStream { id, task })
    }
}

impl Drop for AuthStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The resolver of an `OCIRegistry`: plain HTTP when asked, credentials over `auth`.
pub(super) fn resolver(plain_http: bool, auth: Option<&AuthStream>) -> tt::RegistryResolver {
    tt::RegistryResolver {
        default_scheme: if plain_http {
            "http".into()
        } else {
            String::new()
        },
        auth_stream: auth.map(|a| a.id.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// Runs one transfer with its progress shown as `display` says. The outer error is bctr's (no
/// Transfer service, a stream that would not open), the inner one the daemon's answer.
pub(super) async fn run(
    ctx: &Ctx,
    source: prost_types::Any,
    destination: prost_types::Any,
    display: Display,
) -> Result<Result<(), tonic::Status>, CmdError> {
    let progress_id = unique("progress");
    let (_keep_open, inbound) = open_stream(ctx, &progress_id).await?;
    let shown = tokio::spawn(show_progress(inbound, display));
    let result = TransferClient::new(ctx.channel.clone())
        .transfer(ctx.request(TransferRequest {
            source: Some(source),
            destination: Some(destination),
            options: Some(TransferOptions {
                progress_stream: progress_id,
            }),
        }))
        .await;
    let _ = tokio::time::timeout(PROGRESS_TAIL, shown).await;
    Ok(result.map(|_| ()))
}

pub(super) fn any(name: &str, value: Vec<u8>) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{name}"),
        value,
    }
}

fn type_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Opens the stream `id` on the Streaming service; returns the sender for bctr's messages and
/// the daemon's messages after its acknowledgement.
async fn open_stream(
    ctx: &Ctx,
    id: &str,
) -> Result<
    (
        mpsc::Sender<prost_types::Any>,
        tonic::Streaming<prost_types::Any>,
    ),
    CmdError,
> {
    let (tx, rx) = mpsc::channel(8);
    let init = StreamInit { id: id.to_owned() };
    // The channel is fresh and holds 8: this cannot wait or fail.
    let _ = tx
        .send(any(
            "containerd.services.streaming.v1.StreamInit",
            init.encode_to_vec(),
        ))
        .await;
    let mut inbound = match StreamingClient::new(ctx.channel.clone())
        .stream(ctx.request(ReceiverStream::new(rx)))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == Code::Unimplemented => return Err(no_transfer()),
        Err(s) => return Err(super::rpc_context("opening a stream to the daemon")(s)),
    };
    match inbound.message().await {
        Ok(Some(_ack)) => Ok((tx, inbound)),
        Ok(None) => Err(CmdError::Failed(
            "the daemon closed the stream before acknowledging it".into(),
        )),
        Err(s) if s.code() == Code::Unimplemented => Err(no_transfer()),
        Err(s) => Err(super::rpc_context("opening a stream to the daemon")(s)),
    }
}

pub(super) fn no_transfer() -> CmdError {
    CmdError::Failed(
        "this daemon has no Transfer service (containerd 1.x?): pull with `ctr images pull` \
         or import an archive with `bctr images import`"
            .into(),
    )
}

/// Answers the daemon's AuthRequests on `inbound` with `user`.
async fn answer_auth(
    tx: mpsc::Sender<prost_types::Any>,
    mut inbound: tonic::Streaming<prost_types::Any>,
    user: String,
) {
    let (username, secret) = match user.split_once(':') {
        Some((u, p)) => (u.to_owned(), p.to_owned()),
        None => (user, String::new()),
    };
    while let Ok(Some(m)) = inbound.message().await {
        if type_name(&m.type_url) != "containerd.types.transfer.AuthRequest" {
            continue;
        }
        let resp = tt::AuthResponse {
            auth_type: tt::AuthType::Credentials as i32,
            secret: secret.clone(),
            username: username.clone(),
            expire_at: None,
        };
        if tx
            .send(any(
                "containerd.types.transfer.AuthResponse",
                resp.encode_to_vec(),
            ))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The daemon's answer to a pull or push (`op`) with what to do about it.
pub(super) fn registry_error(
    op: &str,
    reference: &str,
    had_user: bool,
    s: tonic::Status,
) -> CmdError {
    let msg = s.message();
    let hint = match s.code() {
        Code::Unimplemented => return no_transfer(),
        Code::Unavailable => {
            "check that the registry is running and reachable from the daemon (for a registry \
             without TLS, --plain-http)"
                .to_owned()
        }
        Code::FailedPrecondition if msg.contains("unauthorized") || msg.contains("denied") => {
            if had_user {
                "check the user name and password given with --user".to_owned()
            } else {
                "give credentials with --user user:password".to_owned()
            }
        }
        // The image (or part of it) is not here: nothing to push.
        Code::NotFound if op == "push" && !msg.starts_with("pushing to ") => {
            "import or pull it first (`bctr images import`, `bctr images pull`); \
             `bctr images ls` lists what is here"
                .to_owned()
        }
        // Pull's NotFound included: the daemon's message names the reference.
        _ => String::new(),
    };
    // The daemon's message mostly names the reference already ("pulling <reference>:").
    let msg = if msg.contains(reference) {
        msg.to_owned()
    } else {
        format!("{op} {reference}: {msg}")
    };
    if hint.is_empty() {
        CmdError::Failed(msg)
    } else {
        CmdError::Failed(format!("{msg}\n  hint: {hint}"))
    }
}

/// How progress is shown.
pub(super) enum Display {
    Quiet,
    /// One line per change of state (a pipe, a log); on stderr when stdout is not bctr's
    /// (`bctr run`, where it is the container's).
    Lines {
        stderr: bool,
    },
    /// Live bars, one per blob, under a terminal.
    Bars(MultiProgress),
}

impl Display {
    pub(super) fn choose(quiet: bool) -> Display {
        if quiet {
            Display::Quiet
        } else if std::io::stdout().is_terminal() {
            Display::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stdout()))
        } else {
            Display::Lines { stderr: false }
        }
    }

    /// Progress for a pull that precedes other output on stdout (`bctr run` of a missing
    /// image): bars or lines on stderr.
    pub(super) fn on_stderr() -> Display {
        if std::io::stderr().is_terminal() {
            Display::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Display::Lines { stderr: true }
        }
    }
}

/// A short name for a blob: `layer-sha256:0123456789ab`; other names (the image's) as they are.
fn short(name: &str) -> String {
    match name.split_once("-sha256:") {
        Some((kind, hex)) if hex.len() > 12 => format!("{kind}-sha256:{}", &hex[..12]),
        _ => name.to_owned(),
    }
}

/// The state bctr shows for containerd's event names.
fn state(event: &str) -> &str {
    match event {
        "extracting" => "unpacking",
        "extracted" => "unpacked",
        "complete" => "done",
        other => other,
    }
}

/// Writes a progress line; a closed output (`| head`) ends the display, not the pull.
fn say(out_closed: &mut bool, stderr: bool, line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if *out_closed {
        return;
    }
    let written = if stderr {
        writeln!(std::io::stderr(), "{line}")
    } else {
        writeln!(std::io::stdout(), "{line}")
    };
    if written.is_err() {
        *out_closed = true;
    }
}

async fn show_progress(mut inbound: tonic::Streaming<prost_types::Any>, display: Display) {
    let mut out_closed = false;
    let mut last: HashMap<String, String> = HashMap::new();
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let style = ProgressStyle::with_template(
        "{msg:<34} [{bar:25}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
    )
    .map(|s| s.progress_chars("=> "))
    .ok();
    while let Ok(Some(m)) = inbound.message().await {
        if type_name(&m.type_url) != "containerd.types.transfer.Progress" {
            continue;
        }
        let Ok(p) = tt::Progress::decode(m.value.as_slice()) else {
            continue;
        };
        match &display {
            Display::Quiet => {}
            Display::Lines { stderr } => {
                if p.name.is_empty() {
                    say(&mut out_closed, *stderr, format_args!("{}", p.event));
                    continue;
                }
                // Lines only when the state changes: `downloading` once, not per chunk.
                if last.get(&p.name).map(String::as_str) == Some(p.event.as_str()) {
                    continue;
                }
                last.insert(p.name.clone(), p.event.clone());
                if p.event == "saved" || p.event == "resolved" {
                    let digest = p.desc.as_ref().map(|d| d.digest.as_str()).unwrap_or("");
                    say(
                        &mut out_closed,
                        *stderr,
                        format_args!("{} {} {digest}", p.name, p.event),
                    );
                } else if p.total > 0 {
                    say(
                        &mut out_closed,
                        *stderr,
                        format_args!(
                            "{} {} {}",
                            short(&p.name),
                            state(&p.event),
                            bctr::units::progress_bytes(p.total)
                        ),
                    );
                } else {
                    say(
                        &mut out_closed,
                        *stderr,
                        format_args!("{} {}", short(&p.name), state(&p.event)),
                    );
                }
            }
            Display::Bars(multi) => {
                if p.name.is_empty() || p.total <= 0 {
                    // Status lines and the image itself: printed above the bars.
                    let line = if p.name.is_empty() {
                        p.event.clone()
                    } else {
                        format!("{} {}", p.name, p.event)
                    };
                    let _ = multi.println(line);
                    continue;
                }
                let bar = bars.entry(p.name.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(u64::try_from(p.total).unwrap_or(0)));
                    if let Some(s) = &style {
                        b.set_style(s.clone());
                    }
                    b
                });
                bar.set_position(u64::try_from(p.progress).unwrap_or(0));
                bar.set_message(format!("{} {}", short(&p.name), state(&p.event)));
                if matches!(
                    p.event.as_str(),
                    "complete" | "already exists" | "extracted" | "mounted"
                ) {
                    bar.tick();
                }
            }
        }
    }
    for b in bars.values() {
        b.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_and_states() {
        assert_eq!(
            short(&format!("layer-sha256:{}", "ab".repeat(32))),
            "layer-sha256:abababababab"
        );
        assert_eq!(
            short("docker.io/library/busybox:latest"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(state("extracting"), "unpacking");
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = registry_error(
            "pull",
            "r",
            false,
            tonic::Status::failed_precondition("registry x refused no credentials: unauthorized"),
        );
        assert!(e.to_string().contains("--user"), "{e}");
        let e = registry_error(
            "pull",
            "r",
            false,
            tonic::Status::not_found("pulling r: manifest"),
        );
        assert_eq!(e.to_string(), "pulling r: manifest");
        let e = registry_error(
            "push",
            "r",
            false,
            tonic::Status::not_found("image \"busybox\": not found"),
        );
        assert!(e.to_string().contains("import or pull it first"), "{e}");
        assert!(e.to_string().starts_with("push r: image"), "{e}");
    }
}
