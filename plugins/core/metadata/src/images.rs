//! Image records: a name pointing at a target descriptor (usually a manifest or an index).

use berth_events::Event;
use std::collections::BTreeMap;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::record::{
    apply_label_paths, decode, encode, ensure_namespace, now_nanos, validate_labels,
};
use crate::schema::IMAGES;
use crate::{digest, MetaError, MetadataDb};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub target: Descriptor,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Serialize, Deserialize)]
struct ImageRecord {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    target: Descriptor,
    created_at: i64,
    updated_at: i64,
}

impl ImageRecord {
    fn image(self, name: &str) -> Image {
        Image {
            name: name.to_owned(),
            labels: self.labels,
            target: self.target,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn validate(img: &Image) -> Result<(), MetaError> {
    if img.name.is_empty() {
        return Err(MetaError::InvalidArgument(
            "image name must not be empty".into(),
        ));
    }
    validate_labels(&img.labels)
        .map_err(|e| MetaError::InvalidArgument(format!("image.Labels: {e}")))?;
    validate_target(&img.target)
}

fn validate_target(t: &Descriptor) -> Result<(), MetaError> {
    digest::validate(&t.digest).map_err(|e| {
        MetaError::InvalidArgument(format!("target.Digest {:?} invalid: {e}", t.digest))
    })?;
    if t.size <= 0 {
        return Err(MetaError::InvalidArgument(
            "target.Size must be greater than zero".into(),
        ));
    }
    if t.media_type.is_empty() {
        return Err(MetaError::InvalidArgument(
            "target.MediaType must be set".into(),
        ));
    }
    Ok(())
}

fn not_found(name: &str) -> MetaError {
    MetaError::NotFound(format!("image {name:?}"))
}

impl MetadataDb {
    pub fn get_image(&self, ns: &str, name: &str) -> Result<Image, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(IMAGES)?;
        let v = t.get((ns, name))?.ok_or_else(|| not_found(name))?;
        Ok(decode::<ImageRecord>(&format!("images/{ns}/{name}"), v.value())?.image(name))
    }

    pub fn list_images(&self, ns: &str) -> Result<Vec<Image>, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(IMAGES)?;
        let mut out = Vec::new();
        for entry in t.range((ns, "")..)? {
            let (k, v) = entry?;
            let (kns, name) = k.value();
            if kns != ns {
                break;
            }
            out.push(decode::<ImageRecord>(&format!("images/{ns}/{name}"), v.value())?.image(name));
        }
        Ok(out)
    }

    pub fn create_image(&self, ns: &str, img: &Image) -> Result<Image, MetaError> {
        validate(img)?;
        let wtx = self.write()?;
        let created = {
            ensure_namespace(&wtx, ns)?;
            let mut t = wtx.open_table(IMAGES)?;
            if t.get((ns, img.name.as_str()))?.is_some() {
                return Err(MetaError::AlreadyExists(format!("image {:?}", img.name)));
            }
            let now = now_nanos();
            let rec = ImageRecord {
                labels: img.labels.clone(),
                target: img.target.clone(),
                created_at: now,
                updated_at: now,
            };
            t.insert((ns, img.name.as_str()), encode(&rec)?.as_slice())?;
            rec.image(&img.name)
        };
        wtx.commit()?;
        self.publish(
            ns,
            Event::ImageCreate {
                name: created.name.clone(),
                labels: created.labels.clone(),
            },
        );
        Ok(created)
    }

    /// Field paths as containerd takes them: `labels`, `labels.<k>`, `target`, `annotations`,
    /// `annotations.<k>` (of the target); none means labels and target.
    pub fn update_image(
        &self,
        ns: &str,
        img: &Image,
        paths: &[String],
    ) -> Result<Image, MetaError> {
        if img.name.is_empty() {
            return Err(MetaError::InvalidArgument(
                "image name is required for update".into(),
            ));
        }
        let wtx = self.write()?;
        let updated = {
            let mut t = wtx.open_table(IMAGES)?;
            let mut rec: ImageRecord = match t.get((ns, img.name.as_str()))? {
                Some(v) => decode(&format!("images/{ns}/{}", img.name), v.value())?,
                None => return Err(not_found(&img.name)),
            };
            if paths.is_empty() {
                rec.labels = img.labels.clone();
                rec.target = img.target.clone();
            } else {
                let other = apply_label_paths(&mut rec.labels, &img.labels, paths);
                for p in other {
                    if p == "target" {
                        rec.target = img.target.clone();
                    } else if p == "annotations" {
                        rec.target.annotations = img.target.annotations.clone();
                    } else if let Some(k) = p.strip_prefix("annotations.") {
                        match img.target.annotations.get(k) {
                            Some(v) => rec.target.annotations.insert(k.to_owned(), v.clone()),
                            None => rec.target.annotations.remove(k),
                        };
                    } else {
                        return Err(MetaError::InvalidArgument(format!(
                            "cannot update {p:?} field on image {:?}",
                            img.name
                        )));
                    }
                }
            }
            let check = Image {
                name: img.name.clone(),
                labels: rec.labels.clone(),
                target: rec.target.clone(),
                ..Default::default()
            };
            validate(&check)?;
            rec.updated_at = now_nanos();
            t.insert((ns, img.name.as_str()), encode(&rec)?.as_slice())?;
            rec.image(&img.name)
        };
        wtx.commit()?;
        self.dereferenced();
        self.publish(
            ns,
            Event::ImageUpdate {
                name: updated.name.clone(),
                labels: updated.labels.clone(),
            },
        );
        Ok(updated)
    }

    /// Deletes an image; with `target`, only if the image still points at that digest.
    pub fn delete_image(
        &self,
        ns: &str,
        name: &str,
        target: Option<&str>,
    ) -> Result<(), MetaError> {
        let wtx = self.write()?;
        {
            let mut t = wtx.open_table(IMAGES)?;
            let rec: ImageRecord = match t.get((ns, name))? {
                Some(v) => decode(&format!("images/{ns}/{name}"), v.value())?,
                None => return Err(not_found(name)),
            };
            if let Some(want) = target.filter(|d| !d.is_empty()) {
                if rec.target.digest != want {
                    return Err(MetaError::NotFound(format!(
                        "image {name:?} has target {}, not {want}",
                        rec.target.digest
                    )));
                }
            }
            t.remove((ns, name))?;
        }
        wtx.commit()?;
        self.dereferenced();
        self.publish(
            ns,
            Event::ImageDelete {
                name: name.to_owned(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(name: &str) -> Image {
        Image {
            name: name.into(),
            target: Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: format!("sha256:{}", "c".repeat(64)),
                size: 10,
                annotations: BTreeMap::new(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn deletions_call_the_dereference_callbacks_and_creations_do_not() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        db.on_dereference(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        db.create_image("n", &img("docker.io/library/a:1")).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        db.delete_image("n", "docker.io/library/a:1", None).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A failed deletion changes nothing and calls nothing.
        assert!(db.delete_image("n", "docker.io/library/a:1", None).is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn committed_changes_are_announced_by_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        let ex = std::sync::Arc::new(berth_events::Exchange::default());
        let mut rx = ex.subscribe();
        db.set_events(ex);
        let name = "docker.io/library/a:1";
        db.create_image("n", &img(name)).unwrap();
        // A refused change announces nothing.
        assert!(db.create_image("n", &img(name)).is_err());
        db.add_blob(
            "n",
            &format!("sha256:{}", "b".repeat(64)),
            3,
            BTreeMap::new(),
            None,
        )
        .unwrap();
        db.delete_image("n", name, None).unwrap();
        let got: Vec<(String, String)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| (e.namespace.clone(), e.topic.clone()))
            .collect();
        let want = [
            ("n", "/images/create"),
            ("n", "/content/create"),
            ("n", "/images/delete"),
        ];
        assert_eq!(
            got,
            want.map(|(a, b)| (a.to_owned(), b.to_owned())),
            "in commit order"
        );
    }

    #[test]
    fn crud() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        db.create_image("n", &img("docker.io/library/a:1")).unwrap();
        assert!(matches!(
            db.create_image("n", &img("docker.io/library/a:1")),
            Err(MetaError::AlreadyExists(_))
        ));
        let mut bad = img("x");
        bad.target.size = 0;
        assert!(matches!(
            db.create_image("n", &bad),
            Err(MetaError::InvalidArgument(_))
        ));
        let mut up = img("docker.io/library/a:1");
        up.labels.insert("k".into(), "v".into());
        let got = db.update_image("n", &up, &["labels.k".into()]).unwrap();
        assert_eq!(got.labels["k"], "v");
        assert!(matches!(
            db.update_image("n", &up, &["name".into()]),
            Err(MetaError::InvalidArgument(_))
        ));
        assert_eq!(db.list_images("n").unwrap().len(), 1);
        assert!(matches!(
            db.delete_image(
                "n",
                "docker.io/library/a:1",
                Some(&format!("sha256:{}", "d".repeat(64)))
            ),
            Err(MetaError::NotFound(_))
        ));
        db.delete_image("n", "docker.io/library/a:1", None).unwrap();
        assert!(matches!(
            db.get_image("n", "docker.io/library/a:1"),
            Err(MetaError::NotFound(_))
        ));
    }
}
