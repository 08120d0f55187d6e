//! The on-disk schema: table definitions and the schema version.
//!
//! Every namespaced table is keyed by a tuple whose first element is the namespace, so "is this
//! namespace empty?" is one range probe per table and a namespace's objects are contiguous.
//! Later issues fill the object tables; they are created now so the namespace rules already hold.

use redb::TableDefinition;

use crate::MetaError;

/// Bumped whenever the meaning of stored data changes; `migrate` upgrades older databases.
pub const SCHEMA_VERSION: u64 = 1;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// namespace -> JSON `NamespaceRecord`
pub(crate) const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
/// (namespace, image name) -> JSON image record
pub(crate) const IMAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images");
/// (namespace, digest) -> JSON blob record
pub(crate) const BLOBS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("blobs");
/// (namespace, container id) -> JSON container record
pub(crate) const CONTAINERS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("containers");
/// (namespace, lease id) -> JSON lease record
pub(crate) const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");
/// (namespace, lease id, resource type, resource id) -> ()
pub(crate) const LEASE_RESOURCES: TableDefinition<(&str, &str, &str, &str), ()> =
    TableDefinition::new("lease_resources");
/// (namespace, snapshotter, key) -> JSON snapshot record
pub(crate) const SNAPSHOTS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("snapshots");

/// Creates missing tables and records the schema version; refuses a database from a newer berthd.
pub(crate) fn migrate(db: &berth_redb::Db) -> Result<(), MetaError> {
    {
        let rtx = db.begin_read()?;
        match rtx.open_table(META) {
            Ok(t) => {
                if let Some(v) = t.get("schema_version")? {
                    let found = v.value();
                    if found > SCHEMA_VERSION {
                        return Err(MetaError::SchemaTooNew {
                            found,
                            supported: SCHEMA_VERSION,
                        });
                    }
                    if found == SCHEMA_VERSION {
                        return Ok(());
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let wtx = db.begin_write()?;
    {
        wtx.open_table(NAMESPACES)?;
        wtx.open_table(IMAGES)?;
        wtx.open_table(BLOBS)?;
        wtx.open_table(CONTAINERS)?;
        wtx.open_table(LEASES)?;
        wtx.open_table(LEASE_RESOURCES)?;
        wtx.open_table(SNAPSHOTS)?;
        let mut meta = wtx.open_table(META)?;
        meta.insert("schema_version", SCHEMA_VERSION)?;
    }
    wtx.commit()?;
    tracing::info!(version = SCHEMA_VERSION, "metadata schema ready");
    Ok(())
}
