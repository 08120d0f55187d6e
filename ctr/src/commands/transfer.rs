//! The client side of containerd's Transfer API, shared by `bctr images pull`, `push`, `tag`,
//! `import` and `export`: the streams opened on the Streaming service (progress, credentials
//! when the daemon asks for them, an archive's bytes), the Transfer call, and the live display
//! of the progress the daemon streams back and of the bytes bctr moves.
//!
//! As containerd's client: a progress stream is opened on the Streaming service (StreamInit,
//! then the server's Empty), then Transfer is called naming that stream; the server sends
//! `containerd.types.transfer.Progress` on it and closes it when done. With `--user` a second
//! stream carries the credentials the daemon asks for (AuthRequest → AuthResponse). An import
//! or export has a data stream too, in containerd's binary stream protocol: the receiver grants
//! credit (`WindowUpdate`), the sender sends `Data` within it and closes the stream at the end.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::streaming::{streaming_client::StreamingClient, StreamInit};
use berth_api::transfer::{transfer_client::TransferClient, TransferOptions, TransferRequest};
use berth_api::types::transfer as tt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::{CmdError, Ctx};

/// How long the progress display waits for the daemon to end the stream after the transfer
/// returned (the last events are on their way).
const PROGRESS_TAIL: Duration = Duration::from_secs(10);

pub(super) const OCI_REGISTRY: &str = "containerd.types.transfer.OCIRegistry";
pub(super) const IMAGE_STORE: &str = "containerd.types.transfer.ImageStore";
pub(super) const IMAGE_IMPORT_STREAM: &str = "containerd.types.transfer.ImageImportStream";
pub(super) const IMAGE_EXPORT_STREAM: &str = "containerd.types.transfer.ImageExportStream";
const DATA: &str = "containerd.types.transfer.Data";
const WINDOW_UPDATE: &str = "containerd.types.transfer.WindowUpdate";
/// The credit bctr grants the daemon when it receives an archive (containerd grants 64 KiB;
/// any sender honours what it is given).
const RECEIVE_WINDOW: i32 = 1 << 20;
/// The largest `Data` bctr sends (within the daemon's credit): berthd and containerd's Go
/// receiver take anything up to gRPC's message limit.
const SEND_CHUNK: usize = 128 * 1024;
/// How often the live byte counter is redrawn.
const METER_TICK: Duration = Duration::from_millis(100);

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
    run_metered(ctx, source, destination, display, None).await
}

/// [`run`], with the bytes of an archive bctr moves over a data stream shown beside the
/// daemon's progress.
pub(super) async fn run_metered(
    ctx: &Ctx,
    source: prost_types::Any,
    destination: prost_types::Any,
    display: Display,
    meter: Option<Meter>,
) -> Result<Result<(), tonic::Status>, CmdError> {
    let progress_id = unique("progress");
    let (_keep_open, inbound) = open_stream(ctx, &progress_id).await?;
    let metered = meter.map(|m| tokio::spawn(show_meter(m, display.meter_target())));
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
    if let Some(m) = metered {
        // Its data stream has ended with the transfer (or never will): the last count is shown.
        let _ = tokio::time::timeout(PROGRESS_TAIL, m).await;
    }
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

/// Why a stream did not open.
pub(super) enum OpenError {
    /// The daemon has no Streaming service (containerd 1.x): no Transfer either.
    NoStreaming,
    Failed(CmdError),
}

impl From<OpenError> for CmdError {
    fn from(e: OpenError) -> CmdError {
        match e {
            OpenError::NoStreaming => no_transfer(),
            OpenError::Failed(e) => e,
        }
    }
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
    OpenError,
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
        Err(s) if s.code() == Code::Unimplemented => return Err(OpenError::NoStreaming),
        Err(s) => {
            return Err(OpenError::Failed(super::rpc_context(
                "opening a stream to the daemon",
            )(s)))
        }
    };
    match inbound.message().await {
        Ok(Some(_ack)) => Ok((tx, inbound)),
        Ok(None) => Err(OpenError::Failed(CmdError::Failed(
            "the daemon closed the stream before acknowledging it".into(),
        ))),
        Err(s) if s.code() == Code::Unimplemented => Err(OpenError::NoStreaming),
        Err(s) => Err(OpenError::Failed(super::rpc_context(
            "opening a stream to the daemon",
        )(s))),
    }
}

/// A stream carrying an archive's bytes (containerd's binary stream protocol).
pub(super) struct DataStream {
    /// The name the Transfer request gives the daemon (`import-…`, `export-…`).
    pub(super) id: String,
    tx: mpsc::Sender<prost_types::Any>,
    inbound: tonic::Streaming<prost_types::Any>,
}

impl DataStream {
    /// Opens a data stream named after `kind` (`import`, `export`).
    pub(super) async fn open(ctx: &Ctx, kind: &str) -> Result<DataStream, OpenError> {
        let id = unique(kind);
        let (tx, inbound) = open_stream(ctx, &id).await?;
        Ok(DataStream { id, tx, inbound })
    }

    /// Sends `reader` to the daemon within the credit it grants, then closes bctr's side (the
    /// end of the archive) and waits for the daemon to close the stream. The bytes sent.
    pub(super) async fn send(
        self,
        mut reader: impl AsyncRead + Unpin,
        meter: Meter,
    ) -> Result<u64, CmdError> {
        let DataStream {
            tx, mut inbound, ..
        } = self;
        let stopped = |sent: u64| {
            CmdError::Failed(format!(
                "the daemon stopped reading the archive after {sent} bytes"
            ))
        };
        let mut window: i64 = 0;
        let mut sent: u64 = 0;
        let mut buf = vec![0u8; SEND_CHUNK];
        loop {
            while window <= 0 {
                match inbound.message().await {
                    Ok(Some(m)) if type_name(&m.type_url) == WINDOW_UPDATE => {
                        if let Ok(u) = tt::WindowUpdate::decode(m.value.as_slice()) {
                            window += i64::from(u.update.max(0));
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return Err(stopped(sent)),
                }
            }
            let max = usize::try_from(window)
                .unwrap_or(usize::MAX)
                .min(SEND_CHUNK);
            let n = reader
                .read(&mut buf[..max])
                .await
                .map_err(|e| CmdError::Failed(format!("reading the archive: {e}")))?;
            if n == 0 {
                break;
            }
            let data = tt::Data {
                data: buf[..n].to_vec(),
            };
            tx.send(any(DATA, data.encode_to_vec()))
                .await
                .map_err(|_| stopped(sent))?;
            window -= i64::try_from(n).unwrap_or(i64::MAX);
            sent += n as u64;
            meter.add(n as u64);
        }
        meter.finish();
        // bctr's side closes: the end of the archive. The daemon closes the stream once it
        // has read it; until then what is in flight must not be cut off.
        drop(tx);
        while let Ok(Some(_)) = inbound.message().await {}
        Ok(sent)
    }

    /// Receives an archive from the daemon into `writer`, granting credit as it is written;
    /// ends when the daemon closes the stream. The bytes received.
    pub(super) async fn receive(
        self,
        mut writer: impl AsyncWrite + Unpin,
        meter: Meter,
    ) -> Result<u64, CmdError> {
        let DataStream {
            tx, mut inbound, ..
        } = self;
        let write_err = |e: std::io::Error| CmdError::Failed(format!("writing the archive: {e}"));
        let mut window: i64 = 0;
        let mut received: u64 = 0;
        loop {
            if window < i64::from(RECEIVE_WINDOW) {
                let update = tt::WindowUpdate {
                    update: RECEIVE_WINDOW,
                };
                // A daemon that closed the stream gets no more credit; its end comes below.
                if tx
                    .send(any(WINDOW_UPDATE, update.encode_to_vec()))
                    .await
                    .is_ok()
                {
                    window += i64::from(RECEIVE_WINDOW);
                }
            }
            match inbound.message().await {
                Ok(Some(m)) if type_name(&m.type_url) == DATA => {
                    let data = tt::Data::decode(m.value.as_slice())
                        .map_err(|e| CmdError::Failed(format!("undecodable archive data: {e}")))?
                        .data;
                    writer.write_all(&data).await.map_err(write_err)?;
                    window -= i64::try_from(data.len()).unwrap_or(i64::MAX);
                    received += data.len() as u64;
                    meter.add(data.len() as u64);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(s) => {
                    return Err(super::rpc_context("receiving the archive")(s));
                }
            }
        }
        writer.flush().await.map_err(write_err)?;
        meter.finish();
        Ok(received)
    }
}

/// The bytes of an archive moving over a data stream, for the display.
#[derive(Clone)]
pub(super) struct Meter(Arc<MeterState>);

struct MeterState {
    bytes: AtomicU64,
    done: AtomicBool,
    /// The archive's size, when known (a file being imported).
    total: Option<u64>,
    /// `sent`, `received`.
    verb: &'static str,
    started: Instant,
}

impl Meter {
    pub(super) fn new(verb: &'static str, total: Option<u64>) -> Meter {
        Meter(Arc::new(MeterState {
            bytes: AtomicU64::new(0),
            done: AtomicBool::new(false),
            total,
            verb,
            started: Instant::now(),
        }))
    }

    fn add(&self, n: u64) {
        self.0.bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn finish(&self) {
        self.0.done.store(true, Ordering::Release);
    }

    fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    fn is_done(&self) -> bool {
        self.0.done.load(Ordering::Acquire)
    }

    /// `sent 5.1 MiB in 0.2s (25.3 MiB/s)`.
    fn summary(&self) -> String {
        let secs = self.0.started.elapsed().as_secs_f64();
        let bytes = self.bytes();
        let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
        format!(
            "{} {} in {:.1}s ({}/s)",
            self.0.verb,
            bctr::units::progress_bytes(i64::try_from(bytes).unwrap_or(i64::MAX)),
            secs,
            bctr::units::progress_bytes(rate as i64)
        )
    }
}

/// Where the byte counter goes.
enum MeterTarget {
    Hidden,
    Lines { stderr: bool },
    Bar(MultiProgress),
}

/// Shows the bytes of `meter` until it is done: a live bar with the speed under a terminal,
/// one line at the end otherwise.
async fn show_meter(meter: Meter, target: MeterTarget) {
    match target {
        MeterTarget::Hidden => {}
        MeterTarget::Lines { stderr } => {
            while !meter.is_done() {
                tokio::time::sleep(METER_TICK).await;
            }
            // Nothing moved (the transfer failed first): its error says it all.
            if meter.bytes() > 0 {
                let mut closed = false;
                say(&mut closed, stderr, format_args!("{}", meter.summary()));
            }
        }
        MeterTarget::Bar(multi) => {
            let template = if meter.0.total.is_some() {
                "{msg:<34} [{bar:25}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}"
            } else {
                "{msg:<34} {bytes:>10} {bytes_per_sec:>12} {elapsed}"
            };
            let bar = multi.add(match meter.0.total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::no_length(),
            });
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(format!("archive {}", meter.0.verb));
            loop {
                bar.set_position(meter.bytes());
                if meter.is_done() {
                    break;
                }
                tokio::time::sleep(METER_TICK).await;
            }
            bar.finish();
        }
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
    /// Where a byte counter shown beside this display goes.
    fn meter_target(&self) -> MeterTarget {
        match self {
            Display::Quiet => MeterTarget::Hidden,
            Display::Lines { stderr } => MeterTarget::Lines { stderr: *stderr },
            Display::Bars(multi) => MeterTarget::Bar(multi.clone()),
        }
    }

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
    /// image), or beside an archive written to stdout: bars or lines on stderr.
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

/// How an import or export through the daemon ended when it did not succeed.
pub(super) enum Via {
    /// The daemon has no Transfer service for archives: do it from the client instead.
    NoTransfer,
    Failed(CmdError),
}

impl From<CmdError> for Via {
    fn from(e: CmdError) -> Via {
        Via::Failed(e)
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
