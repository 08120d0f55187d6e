//! `containerd.services.images.v1.Images`: image records by name. Deleting an image removes only
//! the record; the collector frees what it alone referred to (at once with `sync`).

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_api::images::{
    images_server::{Images, ImagesServer},
    CreateImageRequest, CreateImageResponse, DeleteImageRequest, GetImageRequest, GetImageResponse,
    Image as PbImage, ListImagesRequest, ListImagesResponse, UpdateImageRequest,
    UpdateImageResponse,
};
use berth_api::types::Descriptor as PbDescriptor;
use berth_filters::{Adaptor, Filters};
use berth_gc::Scheduler;
use berth_grpc::to_status;
use berth_grpc::{label_field, namespace_required, run_blocking, run_lookup, timestamp};
use berth_metadata::{Descriptor, Image, MetadataDb};
use berth_plugin::{types, Registration};
use tonic::{Request, Response, Status};

pub struct ImagesService {
    db: Arc<MetadataDb>,
    gc: Option<Scheduler>,
}

/// The `io.containerd.grpc.v1.images` plugin.
pub fn registration() -> Registration {
    Registration::new(
        types::GRPC,
        "images",
        &[types::METADATA, types::GC],
        |ctx| {
            let db = ctx.get_as::<MetadataDb>(types::METADATA)?;
            let gc = Scheduler::from_context(ctx);
            let svc = ImagesServer::new(ImagesService { db, gc });
            Ok(berth_grpc::grpc_service!(svc))
        },
    )
}

fn desc_pb(d: Descriptor) -> PbDescriptor {
    PbDescriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    }
}

fn desc(d: PbDescriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

fn image_pb(i: Image) -> PbImage {
    PbImage {
        name: i.name,
        labels: i.labels.into_iter().collect(),
        target: Some(desc_pb(i.target)),
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
    }
}

fn image(i: PbImage) -> Image {
    Image {
        name: i.name,
        labels: i.labels.into_iter().collect(),
        target: i.target.map(desc).unwrap_or_default(),
        created_at: 0,
        updated_at: 0,
    }
}

struct Fields<'a>(&'a Image);

impl Adaptor for Fields<'_> {
    fn field(&self, path: &[String]) -> Vec<String> {
        let i = self.0;
        match path
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["name"] => vec![i.name.clone()],
            ["target", "digest"] => vec![i.target.digest.clone()],
            ["target", "mediatype"] | ["target", "media_type"] => vec![i.target.media_type.clone()],
            ["labels", ..] => label_field(&i.labels, &path[1..]),
            ["annotations", ..] => label_field(&i.target.annotations, &path[1..]),
            _ => Vec::new(),
        }
    }
}

fn required(i: Option<PbImage>) -> Result<PbImage, Status> {
    i.ok_or_else(|| Status::invalid_argument("image must be set: invalid argument"))
}

#[tonic::async_trait]
impl Images for ImagesService {
    #[tracing::instrument(skip_all, fields(name = %req.get_ref().name))]
    async fn get(
        &self,
        req: Request<GetImageRequest>,
    ) -> Result<Response<GetImageResponse>, Status> {
        let ns = namespace_required(&req)?;
        let name = req.into_inner().name;
        let img = run_lookup(|| self.db.get_image(&ns, &name))?;
        Ok(Response::new(GetImageResponse {
            image: Some(image_pb(img)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let ns = namespace_required(&req)?;
        let filters = Filters::parse(&req.into_inner().filters).map_err(|e| to_status(&e))?;
        let db = self.db.clone();
        let all = run_blocking(move || db.list_images(&ns)).await?;
        let images = all
            .into_iter()
            .filter(|i| filters.matches(&Fields(i)))
            .map(image_pb)
            .collect();
        Ok(Response::new(ListImagesResponse { images }))
    }

    #[tracing::instrument(skip_all)]
    async fn create(
        &self,
        req: Request<CreateImageRequest>,
    ) -> Result<Response<CreateImageResponse>, Status> {
        let ns = namespace_required(&req)?;
        let img = image(required(req.into_inner().image)?);
        tracing::debug!(name = %img.name, target = %img.target.digest, "create image");
        let db = self.db.clone();
        let ns2 = ns.clone();
        let created = run_blocking(move || db.create_image(&ns2, &img)).await?;
        Ok(Response::new(CreateImageResponse {
            image: Some(image_pb(created)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update(
        &self,
        req: Request<UpdateImageRequest>,
    ) -> Result<Response<UpdateImageResponse>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        let img = image(required(req.image)?);
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let db = self.db.clone();
        let ns2 = ns.clone();
        let updated = run_blocking(move || db.update_image(&ns2, &img, &paths)).await?;
        Ok(Response::new(UpdateImageResponse {
            image: Some(image_pb(updated)),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %req.get_ref().name, sync = req.get_ref().sync))]
    async fn delete(&self, req: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        let target = req.target.map(|t| t.digest);
        let db = self.db.clone();
        let (ns2, name) = (ns.clone(), req.name.clone());
        run_blocking(move || db.delete_image(&ns2, &name, target.as_deref())).await?;
        if let Some(gc) = &self.gc {
            gc.after_delete(req.sync).await.map_err(|e| to_status(&e))?;
        }
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests;
