//! The image store side: which names an image is stored under (containerd's
//! `core/transfer/image/imagestore.go`, `Store` and `Get`) and the tag operation.

use berth_metadata::{Descriptor as MetaDescriptor, Image, MetaError};
use berth_oci::Descriptor;

use crate::{ImageStore, Progress, ProgressFn, TransferError, Transferrer};

/// An OCI descriptor as the metadata store records image targets.
pub(crate) fn meta_descriptor(d: &Descriptor) -> MetaDescriptor {
    MetaDescriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: i64::try_from(d.size()).unwrap_or(i64::MAX),
        annotations: d
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    }
}

/// A metadata target as an OCI descriptor (for progress events).
pub(crate) fn oci_descriptor(d: &MetaDescriptor) -> Option<Descriptor> {
    let digest = berth_oci::Digest::parse(&d.digest).ok()?;
    let mut b = berth_oci::DescriptorBuilder::default()
        .media_type(berth_oci::MediaType::from(d.media_type.as_str()))
        .digest(berth_oci::oci_spec::image::Digest::from(&digest))
        .size(u64::try_from(d.size).unwrap_or(0));
    if !d.annotations.is_empty() {
        b = b.annotations(
            d.annotations
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    b.build().ok()
}

impl ImageStore {
    /// The images to record for `target`, as containerd's `Store` lists them: the store's name,
    /// then each extra reference that is not a bare prefix (with `@digest` when asked).
    fn images_for(&self, target: &MetaDescriptor) -> Vec<Image> {
        let mut out = Vec::new();
        if !self.name.is_empty() {
            out.push(Image {
                name: self.name.clone(),
                labels: self.labels.clone(),
                target: target.clone(),
                ..Default::default()
            });
        }
        for r in &self.extra_references {
            if r.is_prefix && !r.add_digest {
                continue;
            }
            let name = if r.add_digest {
                format!("{}@{}", r.name, target.digest)
            } else {
                r.name.clone()
            };
            out.push(Image {
                name,
                labels: self.labels.clone(),
                target: target.clone(),
                ..Default::default()
            });
        }
        out
    }
}

impl Transferrer {
    /// Records `target` under the names `dst` gives: create, or update an image that exists
    /// (containerd's order). Blocks (redb transactions).
    pub(crate) fn store_images(
        &self,
        ns: &str,
        dst: &ImageStore,
        target: &MetaDescriptor,
    ) -> Result<Vec<Image>, TransferError> {
        let images = dst.images_for(target);
        if images.is_empty() {
            return Err(TransferError::NoImageName);
        }
        let mut stored = Vec::with_capacity(images.len());
        for img in images {
            let done = match self.db.create_image(ns, &img) {
                Ok(i) => i,
                Err(MetaError::AlreadyExists(_)) => self.db.update_image(ns, &img, &[])?,
                Err(e) => return Err(e.into()),
            };
            stored.push(done);
        }
        Ok(stored)
    }

    /// Stores the image `src` names under the names `dst` gives (containerd's tag: same target,
    /// the destination's labels).
    pub async fn tag(
        &self,
        ns: &str,
        src: &ImageStore,
        dst: &ImageStore,
        progress: ProgressFn,
    ) -> Result<Vec<Image>, TransferError> {
        if src.name.is_empty() {
            return Err(TransferError::InvalidArgument(
                "the source image store names no image".into(),
            ));
        }
        let this = self.clone();
        let (ns, src_name, dst) = (ns.to_owned(), src.name.clone(), dst.clone());
        let stored = tokio::task::spawn_blocking(move || {
            let img = this.db.get_image(&ns, &src_name)?;
            this.store_images(&ns, &dst, &img.target)
        })
        .await??;
        for img in &stored {
            progress(Progress {
                event: "saved".into(),
                name: img.name.clone(),
                desc: oci_descriptor(&img.target),
                ..Default::default()
            });
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageReference;

    #[test]
    fn names_follow_containerd_store() {
        let target = MetaDescriptor {
            media_type: berth_oci::media::OCI_INDEX.into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 10,
            annotations: Default::default(),
        };
        let is = ImageStore {
            name: "docker.io/library/a:1".into(),
            extra_references: vec![
                ImageReference {
                    name: "b".into(),
                    ..Default::default()
                },
                ImageReference {
                    name: "prefix".into(),
                    is_prefix: true,
                    ..Default::default()
                },
                ImageReference {
                    name: "c".into(),
                    add_digest: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let names: Vec<String> = is.images_for(&target).into_iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            vec![
                "docker.io/library/a:1".to_owned(),
                "b".to_owned(),
                format!("c@{}", target.digest)
            ]
        );
        assert!(ImageStore::default().images_for(&target).is_empty());
        assert!(oci_descriptor(&target).is_some());
    }
}
