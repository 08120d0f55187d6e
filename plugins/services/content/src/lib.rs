//! `containerd.services.content.v1.Content`. Converts between proto and store types, moves bytes
//! between gRPC streams and the store, and follows containerd's Write protocol message by
//! message (STAT / WRITE / COMMIT, offset checks, resume) so containerd's clients work unchanged.
//! Streams are bounded channels: a slow client slows the reader, nothing is buffered whole.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;

use berth_api::content::{
    content_server::{Content, ContentServer},
    AbortRequest, DeleteContentRequest, Info, InfoRequest, InfoResponse, ListContentRequest,
    ListContentResponse, ListStatusesRequest, ListStatusesResponse, ReadContentRequest,
    ReadContentResponse, Status as PbStatus, StatusRequest, StatusResponse, UpdateRequest,
    UpdateResponse, WriteAction, WriteContentRequest, WriteContentResponse,
};
use berth_content_store::{ContentError, ContentStore, IngestStatus, NsWriter};
use berth_filters::{Adaptor, Filters};
use berth_grpc::to_status;
use berth_grpc::{lease, namespace_required, run_blocking, run_lookup, timestamp};
use berth_metadata::BlobInfo;
use berth_plugin::{types, Registration};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

const READ_CHUNK: usize = 1 << 20;
/// Ranges up to this size (manifests, configs, indexes: what `ctr run` reads) are read on the
/// calling worker in one `pread` and sent as one message: a reader thread costs more than that.
const SMALL_READ: i64 = 64 * 1024;
/// Infos per List message; keeps messages well under the gRPC size limit.
const LIST_BATCH: usize = 100;

/// `offset..end` of a blob in one message (none for an empty range).
fn read_small(
    file: &std::fs::File,
    offset: i64,
    end: i64,
) -> Result<Option<ReadContentResponse>, Status> {
    use std::os::unix::fs::FileExt;
    if end <= offset {
        return Ok(None);
    }
    let mut data = vec![0u8; (end - offset) as usize];
    let mut got = 0;
    while got < data.len() {
        match file.read_at(&mut data[got..], (offset as u64) + got as u64) {
            Ok(0) => {
                return Err(Status::data_loss(format!(
                    "blob ended at {} of {end} bytes",
                    offset + got as i64
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Status::internal(format!("read: {e}"))),
        }
    }
    Ok(Some(ReadContentResponse { offset, data }))
}

pub struct ContentService {
    store: Arc<ContentStore>,
}

/// The `io.containerd.grpc.v1.content` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "content", &[types::CONTENT], |ctx| {
        let store = ctx.get_as::<ContentStore>(types::CONTENT)?;
        let svc = ContentServer::new(ContentService { store });
        Ok(berth_grpc::grpc_service!(svc))
    })
}

fn info_pb(i: BlobInfo) -> Info {
    Info {
        digest: i.digest,
        size: i.size,
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
        labels: i.labels.into_iter().collect(),
    }
}

fn status_pb(s: IngestStatus) -> PbStatus {
    PbStatus {
        started_at: Some(timestamp(s.started_at)),
        updated_at: Some(timestamp(s.updated_at)),
        r#ref: s.key,
        offset: s.offset,
        total: s.total,
        expected: s.expected,
    }
}

struct InfoFields<'a>(&'a BlobInfo);

impl Adaptor for InfoFields<'_> {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path.first().map(String::as_str) {
            Some("digest") => vec![self.0.digest.clone()],
            Some("size") => vec![self.0.size.to_string()],
            Some("labels") => berth_grpc::label_field(&self.0.labels, &path[1..]),
            _ => Vec::new(),
        }
    }
}

struct StatusFields<'a>(&'a IngestStatus);

impl Adaptor for StatusFields<'_> {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path.first().map(String::as_str) {
            Some("ref") => vec![self.0.key.clone()],
            Some("expected") => vec![self.0.expected.clone()],
            _ => Vec::new(),
        }
    }
}

fn filters(f: &[String]) -> Result<Filters, Status> {
    Filters::parse(f).map_err(|e| to_status(&e))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Content for ContentService {
    #[tracing::instrument(skip_all, fields(digest = %req.get_ref().digest))]
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let ns = namespace_required(&req)?;
        let digest = req.into_inner().digest;
        let info = run_lookup(|| self.store.info(&ns, &digest))?;
        Ok(Response::new(InfoResponse {
            info: Some(info_pb(info)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        let info = req
            .info
            .ok_or_else(|| Status::invalid_argument("info must be set: invalid argument"))?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let want = BlobInfo {
            digest: info.digest,
            labels: info.labels.into_iter().collect::<BTreeMap<_, _>>(),
            ..Default::default()
        };
        let store = self.store.clone();
        let got = run_blocking(move || store.update(&ns, &want, &paths)).await?;
        Ok(Response::new(UpdateResponse {
            info: Some(info_pb(got)),
        }))
    }

    type ListStream = BoxStream<ListContentResponse>;

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        req: Request<ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace_required(&req)?;
        let filters = filters(&req.into_inner().filters)?;
        let store = self.store.clone();
        let all = run_blocking(move || store.list(&ns)).await?;
        let infos: Vec<Info> = all
            .into_iter()
            .filter(|i| filters.matches(&InfoFields(i)))
            .map(info_pb)
            .collect();
        let batches: Vec<Result<ListContentResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|c| Ok(ListContentResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    #[tracing::instrument(skip_all, fields(digest = %req.get_ref().digest))]
    async fn delete(&self, req: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let digest = req.into_inner().digest;
        let store = self.store.clone();
        let (ns2, d2) = (ns.clone(), digest.clone());
        run_blocking(move || store.delete(&ns2, &d2)).await?;
        // The record's deletion wakes the collector (the metadata store's dereference callback).
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<ReadContentResponse>;

    #[tracing::instrument(skip_all, fields(digest = %req.get_ref().digest))]
    async fn read(
        &self,
        req: Request<ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace_required(&req)?;
        let mut req = req.into_inner();
        let (file, size) = run_lookup(|| self.store.open_reader(&ns, &req.digest))?;
        // As containerd: a negative offset reads from the start, a size of zero or less to the
        // end (checked after the blob is found, so a missing blob is NotFound whatever the range).
        req.offset = req.offset.max(0);
        req.size = req.size.max(0);
        if req.offset > size {
            return Err(Status::out_of_range(format!(
                "read past object length {size} bytes: out of range"
            )));
        }
        let end = if req.size > 0 {
            size.min(req.offset.saturating_add(req.size))
        } else {
            size
        };
        let offset = req.offset;
        if end - offset <= SMALL_READ {
            let msg = read_small(&file, offset, end)?;
            return Ok(Response::new(Box::pin(tokio_stream::iter(msg.map(Ok)))));
        }
        let (tx, rx) = mpsc::channel(2);
        // A blocking reader thread feeding a bounded channel: it waits while the client is slow
        // and stops as soon as the client goes away (send fails).
        tokio::task::spawn_blocking(move || {
            let mut file = file;
            if let Err(e) = file.seek(SeekFrom::Start(offset as u64)) {
                let _ = tx.blocking_send(Err(Status::internal(format!("seek: {e}"))));
                return;
            }
            let mut pos = offset;
            while pos < end {
                let want = usize::try_from(end - pos)
                    .unwrap_or(READ_CHUNK)
                    .min(READ_CHUNK);
                let mut buf = vec![0u8; want];
                match file.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.blocking_send(Err(Status::data_loss(format!(
                            "blob ended at {pos} of {end} bytes"
                        ))));
                        return;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        let msg = ReadContentResponse {
                            offset: pos,
                            data: buf,
                        };
                        if tx.blocking_send(Ok(msg)).is_err() {
                            return; // client cancelled
                        }
                        pos += n as i64;
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!("read: {e}"))));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, fields(r#ref = %req.get_ref().r#ref))]
    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let ns = namespace_required(&req)?;
        let reference = req.into_inner().r#ref;
        let store = self.store.clone();
        let st = run_blocking(move || store.status(&ns, &reference)).await?;
        Ok(Response::new(StatusResponse {
            status: Some(status_pb(st)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_statuses(
        &self,
        req: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        let ns = namespace_required(&req)?;
        let filters = filters(&req.into_inner().filters)?;
        let store = self.store.clone();
        let all = run_blocking(move || store.list_statuses(&ns)).await?;
        let statuses = all
            .into_iter()
            .filter(|s| filters.matches(&StatusFields(s)))
            .map(status_pb)
            .collect();
        Ok(Response::new(ListStatusesResponse { statuses }))
    }

    type WriteStream = BoxStream<WriteContentResponse>;

    #[tracing::instrument(skip_all)]
    async fn write(
        &self,
        req: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = namespace_required(&req)?;
        let lease = lease(&req);
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("first message must have a reference"))?;
        if first.r#ref.is_empty() {
            return Err(Status::invalid_argument(
                "first message must have a reference",
            ));
        }
        tracing::debug!(r#ref = %first.r#ref, total = first.total, expected = %first.expected, "write started");
        let store = self.store.clone();
        let (ns2, reference, total, expected, lease2) = (
            ns.clone(),
            first.r#ref.clone(),
            first.total,
            first.expected.clone(),
            lease.clone(),
        );
        let writer = run_blocking(move || {
            store.writer(&ns2, &reference, total, &expected, lease2.as_deref())
        })
        .await?;
        let (tx, rx) = mpsc::channel(4);
        let session = WriteSession {
            store: self.store.clone(),
            ns,
            lease,
            total: first.total,
            expected: first.expected.clone(),
            tx,
        };
        tokio::spawn(session.run(writer, first, inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, fields(r#ref = %req.get_ref().r#ref))]
    async fn abort(&self, req: Request<AbortRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let reference = req.into_inner().r#ref;
        let store = self.store.clone();
        run_blocking(move || store.abort(&ns, &reference)).await?;
        Ok(Response::new(()))
    }
}

struct WriteSession {
    store: Arc<ContentStore>,
    ns: String,
    /// The `containerd-lease` header of the stream.
    lease: Option<String>,
    total: i64,
    expected: String,
    tx: mpsc::Sender<Result<WriteContentResponse, Status>>,
}

impl WriteSession {
    /// Serves one Write stream; any error ends it with that status. A writer dropped without
    /// commit keeps its data for a later resume.
    async fn run(
        mut self,
        writer: NsWriter,
        first: WriteContentRequest,
        mut inbound: Streaming<WriteContentRequest>,
    ) {
        let mut writer = Some(writer);
        let mut req = first;
        loop {
            let Some(w) = writer.take() else { return };
            match self.step(w, req).await {
                Ok((msg, w, done)) => {
                    if self.tx.send(Ok(msg)).await.is_err() || done {
                        return;
                    }
                    writer = w;
                }
                Err(status) => {
                    if status.code() != tonic::Code::AlreadyExists {
                        tracing::warn!(error = %status.message(), "write failed");
                    }
                    let _ = self.tx.send(Err(status)).await;
                    return;
                }
            }
            req = match inbound.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "write stream ended by client");
                    return;
                }
            };
        }
    }

    /// One message of containerd's protocol. Returns the reply, the writer (unless committed)
    /// and whether the stream is finished.
    async fn step(
        &mut self,
        mut w: NsWriter,
        req: WriteContentRequest,
    ) -> Result<(WriteContentResponse, Option<NsWriter>, bool), Status> {
        let action = WriteAction::try_from(req.action).map_err(|_| {
            Status::invalid_argument(format!("unknown write action {}", req.action))
        })?;
        let mut msg = WriteContentResponse {
            action: req.action,
            ..Default::default()
        };
        let st = w.status();
        msg.offset = st.offset;
        if !req.expected.is_empty() {
            self.expected = req.expected.clone();
            let (store, ns, d, lease) = (
                self.store.clone(),
                self.ns.clone(),
                req.expected.clone(),
                self.lease.clone(),
            );
            // The lease holds a blob the client is told exists, as at the stream's start.
            let exists =
                run_blocking(move || store.hold_if_present(&ns, &d, lease.as_deref())).await?;
            if exists {
                let reference = w.reference().to_owned();
                drop(w);
                let (store, ns) = (self.store.clone(), self.ns.clone());
                let _ = run_blocking(move || store.abort(&ns, &reference)).await;
                return Err(Status::already_exists(format!(
                    "blob with expected digest {} exists",
                    req.expected
                )));
            }
        }
        if req.total > 0 {
            self.total = req.total;
            w.set_total(req.total);
        }
        match action {
            WriteAction::Stat => {
                msg.digest = w.digest();
                msg.started_at = Some(timestamp(st.started_at));
                msg.updated_at = Some(timestamp(st.updated_at));
                msg.total = self.total;
                Ok((msg, Some(w), false))
            }
            WriteAction::Write | WriteAction::Commit => {
                if req.offset > 0 && req.offset != st.offset {
                    return Err(Status::out_of_range(format!(
                        "write @{} must occur at current offset {}",
                        req.offset, st.offset
                    )));
                }
                let commit = action == WriteAction::Commit;
                let reset = req.offset == 0 && st.offset > 0;
                let store = self.store.clone();
                let (total, expected) = (self.total, self.expected.clone());
                let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
                let data = req.data;
                // The metadata store announces /content/create when the commit records the blob.
                let (w, digest, offset) = run_blocking(move || {
                    if reset {
                        w.reset()?;
                    }
                    if !data.is_empty() {
                        w.write(&data)?;
                    }
                    let offset = w.status().offset;
                    if commit {
                        let info = w.commit(&store, total, &expected, labels)?;
                        Ok::<_, ContentError>((None, info.digest, offset))
                    } else {
                        let d = w.digest();
                        Ok((Some(w), d, offset))
                    }
                })
                .await?;
                msg.offset = offset;
                msg.digest = digest;
                Ok((msg, w, commit))
            }
        }
    }
}
