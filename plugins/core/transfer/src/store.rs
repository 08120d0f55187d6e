//! The image store side: which names an image is stored under (containerd's
//! `core/transfer/image/imagestore.go`, `Store` and `Get`) and the tag operation.

use berth_image_archive::reference::{self, RefTranslator};
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

/// The annotation an import puts on the manifests of its archive's index, so the image store
/// names them from their own annotations (containerd's `io.containerd.import.ref-source`).
pub(crate) const REF_SOURCE: &str = "io.containerd.import.ref-source";
/// Its one value: the names come from `io.containerd.image.name` / `ref.name`.
pub(crate) const REF_SOURCE_ANNOTATION: &str = "annotation";

/// A back-reference label containerd puts on the extra images of an image store with a name.
const LABEL_BREF_IMAGE: &str = "containerd.io/gc.bref.image";

impl ImageStore {
    /// The labels of the images an extra reference names: containerd's `extraRefLabels`. When
    /// the store has a name of its own, they point back at it and expire at once, so that
    /// containerd's collector removes them with it (Berth's collector keeps images whatever
    /// their labels; the labels are recorded as containerd records them).
    fn extra_ref_labels(&self) -> std::collections::BTreeMap<String, String> {
        if self.name.is_empty() {
            return self.labels.clone();
        }
        let mut labels = self.labels.clone();
        labels.insert(LABEL_BREF_IMAGE.to_owned(), self.name.clone());
        labels.extend(berth_metadata::expiring_in(std::time::Duration::ZERO));
        labels
    }

    /// The images to record for `target`, as containerd's `Store` lists them. A descriptor an
    /// import marked with [`REF_SOURCE`] is named from its annotations through the store's
    /// prefix references; any other by the store's name, then each extra reference that is not
    /// a bare prefix (with `@digest` when asked). The marker is not part of the recorded target.
    pub(crate) fn images_for(&self, target: &MetaDescriptor) -> Result<Vec<Image>, TransferError> {
        let mut target = target.clone();
        let image = |name: String, labels| Image {
            name,
            labels,
            target: MetaDescriptor::default(),
            ..Default::default()
        };
        let mut out = Vec::new();
        if let Some(source) = target.annotations.remove(REF_SOURCE) {
            if source != REF_SOURCE_ANNOTATION {
                return Err(TransferError::InvalidArgument(format!(
                    "ref source {source:?} not supported"
                )));
            }
            for r in self.extra_references.iter().filter(|r| r.is_prefix) {
                let translator = if r.allow_overwrite {
                    RefTranslator::AddPrefix(r.name.clone())
                } else {
                    RefTranslator::FilterPrefix(r.name.clone())
                };
                let name = reference::stored_image_name(&target.annotations, &translator);
                let digested = format!("{}@{}", r.name, target.digest);
                if name.is_empty() {
                    if r.add_digest {
                        out.push(image(digested, self.extra_ref_labels()));
                    }
                    continue;
                }
                out.push(image(name, self.extra_ref_labels()));
                // A named image gets its digest name too, unless the reference skips those.
                if r.add_digest && !r.skip_named_digest {
                    out.push(image(digested, self.extra_ref_labels()));
                }
            }
        } else {
            if !self.name.is_empty() {
                out.push(image(self.name.clone(), self.labels.clone()));
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
                out.push(image(name, self.extra_ref_labels()));
            }
        }
        for img in &mut out {
            img.target = target.clone();
        }
        Ok(out)
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
        let images = dst.images_for(target)?;
        if images.is_empty() {
            return Err(TransferError::NoImageName);
        }
        let mut stored = Vec::with_capacity(images.len());
        for img in images {
            // Create, else update; an image deleted between the two is created again.
            let done = loop {
                match self.db.create_image(ns, &img) {
                    Ok(i) => break i,
                    Err(MetaError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                match self.db.update_image(ns, &img, &[]) {
                    Ok(i) => break i,
                    Err(MetaError::NotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
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
        let images = is.images_for(&target).unwrap();
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        let c = format!("c@{}", target.digest);
        assert_eq!(names, ["docker.io/library/a:1", "b", c.as_str()]);
        // The extra names point back at the store's name and expire (containerd's labels).
        assert!(images[0].labels.is_empty());
        assert_eq!(images[1].labels[LABEL_BREF_IMAGE], "docker.io/library/a:1");
        assert!(images[1].labels.contains_key(berth_metadata::EXPIRE_LABEL));
        assert!(ImageStore::default()
            .images_for(&target)
            .unwrap()
            .is_empty());
        assert!(oci_descriptor(&target).is_some());
    }

    /// What `ctr images import` (containerd 2.x) asks for, and what it gets for the manifests
    /// of an archive's index.
    #[test]
    fn imported_manifests_are_named_from_their_annotations() {
        let manifest = |annotations: &[(&str, &str)]| {
            let mut a: std::collections::BTreeMap<String, String> = annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            a.insert(REF_SOURCE.into(), REF_SOURCE_ANNOTATION.into());
            MetaDescriptor {
                media_type: berth_oci::media::OCI_MANIFEST.into(),
                digest: format!("sha256:{}", "cd".repeat(32)),
                size: 10,
                annotations: a,
            }
        };
        let named = manifest(&[(berth_oci::ANNOTATION_IMAGE_NAME, "docker.io/library/x:1")]);
        let tagged = manifest(&[(berth_oci::ANNOTATION_REF_NAME, "2.0")]);
        let anonymous = manifest(&[]);
        let prefix = |name: &str, overwrite, digest, skip| ImageStore {
            extra_references: vec![ImageReference {
                name: name.into(),
                is_prefix: true,
                allow_overwrite: overwrite,
                add_digest: digest,
                skip_named_digest: skip,
            }],
            ..Default::default()
        };
        let names = |is: &ImageStore, d: &MetaDescriptor| -> Vec<String> {
            let imgs = is.images_for(d).unwrap();
            // The marker is never part of the recorded target.
            assert!(imgs
                .iter()
                .all(|i| !i.target.annotations.contains_key(REF_SOURCE)));
            imgs.into_iter().map(|i| i.name).collect()
        };
        let dated = prefix("import-2024-01-01", true, false, false);
        assert_eq!(names(&dated, &named), ["docker.io/library/x:1"]);
        assert_eq!(names(&dated, &tagged), ["import-2024-01-01:2.0"]);
        assert!(names(&dated, &anonymous).is_empty());
        // --base-name: full names outside it are not stored.
        let base = prefix("example.org/app", false, false, false);
        assert!(names(&base, &named).is_empty());
        assert_eq!(names(&base, &tagged), ["example.org/app:2.0"]);
        // --digests: every manifest by digest, named ones by name too.
        let d = &anonymous.digest;
        let digests = prefix("p", true, true, false);
        assert_eq!(names(&digests, &anonymous), [format!("p@{d}")]);
        assert_eq!(
            names(&digests, &named),
            ["docker.io/library/x:1".to_owned(), format!("p@{d}")]
        );
        // --skip-digest-for-named: the named ones only by name.
        let skip = prefix("p", true, true, true);
        assert_eq!(names(&skip, &named), ["docker.io/library/x:1"]);
        // The store's own name is for the index, not for its manifests.
        let indexed = ImageStore {
            name: "idx".into(),
            ..dated.clone()
        };
        assert_eq!(names(&indexed, &named), ["docker.io/library/x:1"]);
        let mut bad = named.clone();
        bad.annotations
            .insert(REF_SOURCE.into(), "elsewhere".into());
        assert!(indexed.images_for(&bad).is_err());
    }
}
