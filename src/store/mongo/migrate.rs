//! `migrate`: make the indexes of `query::indexes` exist, safely on a database that already
//! has data (the seed's JobSphere MongoDB has its own `users`, maybe `messages`).
//!
//! First a plan, from `listIndexes` and a probe for documents this store cannot read; nothing
//! is built unless the whole plan is buildable. An index is *present* (same name, keys, unique
//! and partial filter), *to create*, or in *conflict*: the same name with other keys or options
//! (the server would answer 86 `IndexKeySpecsConflict`), or the same keys under another name
//! (85 `IndexOptionsConflict`). A collection holding foreign documents (another service's
//! `users` or `messages`) is refused too: they would fail to deserialize on every read. The
//! way forward for both is the same: a dedicated database (`MONGODB_DB`) or a collection
//! prefix (`MONGODB_COLLECTION_PREFIX`), never dropping someone else's index.
//!
//! Then the builds, one named index at a time: a unique index that cannot be built because
//! existing documents already break it (11000 during the build) is reported with the index, the
//! duplicate key and the same way forward. `jobsphere-chat migrate --dry-run` prints the plan.

use std::{fmt, time::Duration};

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use mongodb::{Database, error::ErrorKind};

use super::{
    MongoSettings, Names,
    connect::{enforced, prepare},
    errors::map_err,
    query::{self, IndexSpec},
    schema::{CONVERSATIONS, MESSAGES, USERS, VIEW_VERSIONS},
};
use crate::store::{StoreError, StoreResult};

/// Index builds on a large collection take a while; still bounded so startup cannot hang.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(120);
/// `NamespaceNotFound`: `listIndexes` on a collection that does not exist yet.
const NAMESPACE_NOT_FOUND: i32 = 26;

const WAY_FORWARD: &str = "Way forward: point the chat store at its own database (MONGODB_DB=jobsphere_chat) \
     or give its collections a prefix (MONGODB_COLLECTION_PREFIX=chat_), then run `jobsphere-chat migrate --dry-run` \
     again; do not drop or change indexes another service may rely on.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexState {
    Present,
    Create,
    /// Why the server would refuse to build it.
    Conflict(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedIndex {
    pub collection: String,
    pub name: &'static str,
    pub keys: Document,
    pub state: IndexState,
}

/// What `migrate` would do on a database.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationPlan {
    pub db: String,
    pub indexes: Vec<PlannedIndex>,
    /// (collection, `_id` of a document this store cannot read).
    pub foreign: Vec<(String, String)>,
}

impl MigrationPlan {
    /// Whether `migrate` would build everything it needs.
    pub fn is_buildable(&self) -> bool {
        self.foreign.is_empty() && !self.indexes.iter().any(|i| matches!(i.state, IndexState::Conflict(_)))
    }

    pub fn to_create(&self) -> impl Iterator<Item = &PlannedIndex> {
        self.indexes.iter().filter(|i| i.state == IndexState::Create)
    }

    fn refusal(&self) -> String {
        let mut lines = vec![format!("migrate refused on database {:?}; nothing was built:", self.db)];
        for i in &self.indexes {
            if let IndexState::Conflict(why) = &i.state {
                lines.push(format!("  index {}.{}: {why}", i.collection, i.name));
            }
        }
        for (c, id) in &self.foreign {
            lines.push(format!(
                "  collection {c} holds documents of another shape (e.g. _id {id}): another service's data"
            ));
        }
        lines.push(WAY_FORWARD.to_owned());
        lines.join("\n")
    }
}

impl fmt::Display for MigrationPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "database {}:", self.db)?;
        for i in &self.indexes {
            let what = match &i.state {
                IndexState::Present => "present".to_owned(),
                IndexState::Create => "would create".to_owned(),
                IndexState::Conflict(why) => format!("CONFLICT: {why}"),
            };
            writeln!(f, "  {}.{} {}: {what}", i.collection, i.name, i.keys)?;
        }
        for (c, id) in &self.foreign {
            writeln!(f, "  {c}: FOREIGN DOCUMENTS (e.g. _id {id}): this store cannot read them")?;
        }
        if self.is_buildable() {
            write!(f, "migrate would create {} index(es)", self.to_create().count())
        } else {
            write!(f, "migrate would refuse.\n{WAY_FORWARD}")
        }
    }
}

/// The plan for `settings`, without building anything (`migrate --dry-run`).
pub async fn plan(settings: &MongoSettings) -> anyhow::Result<MigrationPlan> {
    super::validate_prefix(&settings.collection_prefix)?;
    let prepared = prepare(settings).await?;
    let client = mongodb::Client::with_options(prepared.options)?;
    let db = client.database_with_options(&settings.db, enforced(prepared.deadline));
    let names = Names { prefix: settings.collection_prefix.clone() };
    let plan = tokio::time::timeout(MIGRATE_TIMEOUT, plan_on(&db, &names))
        .await
        .map_err(|_| anyhow::anyhow!("MongoDB did not answer within {MIGRATE_TIMEOUT:?}"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    client.shutdown().await;
    Ok(plan)
}

async fn plan_on(db: &Database, names: &Names) -> StoreResult<MigrationPlan> {
    let specs = query::indexes();
    let mut indexes = Vec::new();
    for logical in [CONVERSATIONS, MESSAGES] {
        let existing = list_indexes(db, &names.of(logical)).await?;
        for spec in specs.iter().filter(|s| s.collection == logical) {
            indexes.push(PlannedIndex {
                collection: names.of(logical),
                name: spec.name,
                keys: spec.keys.clone(),
                state: compare(spec, &existing),
            });
        }
    }
    let mut foreign = Vec::new();
    for logical in [USERS, CONVERSATIONS, MESSAGES, VIEW_VERSIONS] {
        let coll = db.collection::<Document>(&names.of(logical));
        let found = coll
            .find_one(query::foreign_documents(logical))
            .projection(doc! { "_id": 1 })
            .max_time(MIGRATE_TIMEOUT)
            .await
            .map_err(map_err)?;
        if let Some(d) = found {
            foreign.push((names.of(logical), d.get("_id").map_or_else(|| "?".to_owned(), ToString::to_string)));
        }
    }
    Ok(MigrationPlan { db: db.name().to_owned(), indexes, foreign })
}

/// The index documents of a collection (none when it does not exist yet).
async fn list_indexes(db: &Database, collection: &str) -> StoreResult<Vec<Document>> {
    let coll = db.collection::<Document>(collection);
    let cursor = match coll.list_indexes().max_time(MIGRATE_TIMEOUT).await {
        Ok(c) => c,
        Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == NAMESPACE_NOT_FOUND) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(map_err(e)),
    };
    let models: Vec<mongodb::IndexModel> = cursor.try_collect().await.map_err(map_err)?;
    Ok(models.iter().filter_map(|m| bson::to_document(m).ok()).collect())
}

/// Numbers compare by value (`1`, `1_i64` and `1.0` are one key direction); documents by
/// field order as well, as index keys do.
fn same(a: &Bson, b: &Bson) -> bool {
    let num = |x: &Bson| match x {
        Bson::Int32(v) => Some(f64::from(*v)),
        Bson::Int64(v) => Some(*v as f64),
        Bson::Double(v) => Some(*v),
        _ => None,
    };
    match (a, b) {
        (Bson::Document(x), Bson::Document(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        (Bson::Array(x), Bson::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// How `spec` stands against the existing index documents of its collection.
pub(super) fn compare(spec: &IndexSpec, existing: &[Document]) -> IndexState {
    let keys = Bson::Document(spec.keys.clone());
    let unique = |d: &Document| d.get_bool("unique").unwrap_or(false);
    let partial = |d: &Document| d.get_document("partialFilterExpression").ok().cloned();
    let same_partial = |d: &Document| match (partial(d), &spec.partial) {
        (None, None) => true,
        (Some(a), Some(b)) => same(&Bson::Document(a), &Bson::Document(b.clone())),
        _ => false,
    };
    let key_of = |d: &Document| d.get("key").cloned().unwrap_or(Bson::Null);
    if let Some(d) = existing.iter().find(|d| d.get_str("name") == Ok(spec.name)) {
        if !same(&key_of(d), &keys) {
            return IndexState::Conflict(format!(
                "an index of this name exists with other keys {} (server code 86, IndexKeySpecsConflict)",
                key_of(d)
            ));
        }
        if unique(d) != spec.unique || !same_partial(d) {
            return IndexState::Conflict(format!(
                "an index of this name exists with other options (unique: {}, partial: {:?}) (server code 86)",
                unique(d),
                partial(d)
            ));
        }
        return IndexState::Present;
    }
    if let Some(d) = existing.iter().find(|d| same(&key_of(d), &keys) && same_partial(d)) {
        return IndexState::Conflict(format!(
            "the same keys are indexed as {:?}{} (server code 85, IndexOptionsConflict)",
            d.get_str("name").unwrap_or("?"),
            if unique(d) != spec.unique { ", with other uniqueness" } else { "" }
        ));
    }
    IndexState::Create
}

/// `migrate`: plan, refuse a plan that cannot be built, then build what is missing.
pub(super) async fn run(db: &Database, names: &Names) -> StoreResult<()> {
    tokio::time::timeout(MIGRATE_TIMEOUT, async {
        let plan = plan_on(db, names).await?;
        if !plan.is_buildable() {
            return Err(StoreError::Internal(plan.refusal()));
        }
        let specs = query::indexes();
        for planned in plan.to_create() {
            let Some(spec) = specs.iter().find(|s| s.name == planned.name) else { continue };
            let coll = db.collection::<Document>(&planned.collection);
            if let Err(e) = coll.create_index(spec.model()).max_time(MIGRATE_TIMEOUT).await {
                return Err(build_failure(&plan.db, planned, e));
            }
            tracing::info!(collection = planned.collection, index = planned.name, "index created");
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("migrate did not finish within {MIGRATE_TIMEOUT:?}"))))
}

/// A build the plan could not foresee failing: explained, with the way forward.
fn build_failure(db: &str, i: &PlannedIndex, e: mongodb::error::Error) -> StoreError {
    let code = match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    };
    match code {
        Some(11000) => StoreError::Internal(format!(
            "migrate on database {db:?}: unique index {}.{} {} cannot be built: existing documents already break it ({}). \
             Earlier indexes of this run were built; nothing else was changed.\n{WAY_FORWARD}",
            i.collection, i.name, i.keys, e.kind
        )),
        Some(85 | 86) => StoreError::Internal(format!(
            "migrate on database {db:?}: index {}.{} conflicts with an existing index ({}).\n{WAY_FORWARD}",
            i.collection, i.name, e.kind
        )),
        _ => map_err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> IndexSpec {
        query::indexes().into_iter().find(|s| s.name == name).unwrap()
    }

    fn existing(name: &str, key: Document, extra: Document) -> Document {
        let mut d = doc! { "v": 2, "key": key, "name": name };
        d.extend(extra);
        d
    }

    #[test]
    fn the_same_index_is_present_whatever_the_number_types() {
        let s = spec("messages_sender_client_id");
        let d = existing(
            "messages_sender_client_id",
            doc! { "senderId": 1.0, "clientMessageId": 1_i64 },
            doc! { "unique": true, "partialFilterExpression": { "clientMessageId": { "$type": "string" } } },
        );
        assert_eq!(compare(&s, &[existing("_id_", doc! { "_id": 1 }, doc! {}), d]), IndexState::Present);
        assert_eq!(compare(&s, &[existing("_id_", doc! { "_id": 1 }, doc! {})]), IndexState::Create);
        assert_eq!(compare(&s, &[]), IndexState::Create);
    }

    #[test]
    fn name_taken_by_other_keys_or_options_is_a_conflict() {
        let s = spec("messages_conversation_seq");
        let other_keys = existing("messages_conversation_seq", doc! { "conversationId": 1 }, doc! { "unique": true });
        assert!(matches!(compare(&s, &[other_keys]), IndexState::Conflict(w) if w.contains("86")));
        let not_unique = existing("messages_conversation_seq", doc! { "conversationId": 1, "seq": 1 }, doc! {});
        assert!(matches!(compare(&s, &[not_unique]), IndexState::Conflict(w) if w.contains("options")));
        let order_matters =
            existing("messages_conversation_seq", doc! { "seq": 1, "conversationId": 1 }, doc! { "unique": true });
        assert!(matches!(compare(&s, &[order_matters]), IndexState::Conflict(_)));
    }

    #[test]
    fn same_keys_under_another_name_is_a_conflict() {
        let s = spec("messages_sender");
        let d = existing("senderId_1", doc! { "senderId": 1 }, doc! {});
        assert!(matches!(compare(&s, &[d]), IndexState::Conflict(w) if w.contains("senderId_1") && w.contains("85")));
        // Same keys but another partial filter is another index to the server: no conflict.
        let p = existing("by_sender_recent", doc! { "senderId": 1 }, doc! { "partialFilterExpression": { "x": 1 } });
        assert_eq!(compare(&s, &[p]), IndexState::Create);
    }

    #[test]
    fn a_plan_with_conflicts_or_foreign_documents_is_refused_with_a_way_forward() {
        let mut plan = MigrationPlan {
            db: "jobsphere".into(),
            indexes: vec![
                PlannedIndex {
                    collection: "messages".into(),
                    name: "messages_sender",
                    keys: doc! { "senderId": 1 },
                    state: IndexState::Conflict("the same keys are indexed as \"senderId_1\"".into()),
                },
                PlannedIndex {
                    collection: "messages".into(),
                    name: "messages_conversation_seq",
                    keys: doc! { "conversationId": 1, "seq": 1 },
                    state: IndexState::Create,
                },
            ],
            foreign: vec![("users".into(), "ObjectId(\"65a0…\")".into())],
        };
        assert!(!plan.is_buildable());
        let r = plan.refusal();
        assert!(
            r.contains("nothing was built") && r.contains("messages.messages_sender") && r.contains("users"),
            "{r}"
        );
        assert!(r.contains("MONGODB_COLLECTION_PREFIX") && r.contains("MONGODB_DB"), "{r}");
        let shown = plan.to_string();
        assert!(
            shown.contains("would create") && shown.contains("CONFLICT") && shown.contains("would refuse"),
            "{shown}"
        );
        plan.indexes.remove(0);
        plan.foreign.clear();
        assert!(plan.is_buildable());
        assert!(plan.to_string().ends_with("migrate would create 1 index(es)"), "{plan}");
    }
}
