//! The writes: users and conversations (upserts that converge when nodes race), and the
//! message and receipt protocols of [`super::flow`] run on the driver. How each keeps its
//! invariant is in the module docs of [`super`].

use bson::oid::ObjectId;
use mongodb::options::ReturnDocument;

use super::{
    MongoStore,
    errors::{is_duplicate_key, map_err},
    flow::{self, Stored},
    query,
    schema::{parse_id, to_bson_time},
};
use crate::{
    chat::model::{Conversation, User, now},
    store::{
        DeliveryReceipt, Inserted, NewMessage, ReadReceipt, StoreError, StoreResult, fresh_view_version, sorted_pair,
    },
    telemetry::metrics::DB_ERRORS_TOTAL,
};

/// Attempts of an upsert that keeps losing a duplicate-key race (the winner's doc is then read).
const MAX_UPSERT_ATTEMPTS: usize = 3;

pub(super) async fn upsert_user(s: &MongoStore, user: &User) -> StoreResult<()> {
    s.call(async {
        let update = query::user_upsert(
            &user.name,
            user.email.as_deref(),
            user.role,
            user.avatar.as_deref(),
            to_bson_time(&now()),
        );
        for _ in 0..MAX_UPSERT_ATTEMPTS {
            // Two first logins at once can both try to insert: the loser updates next round.
            match s.users.update_one(query::user_key(&user.id), update.clone()).upsert(true).await {
                Ok(_) => return Ok(()),
                Err(e) if is_duplicate_key(&e) => continue,
                Err(e) => return Err(map_err(e)),
            }
        }
        Err(StoreError::Conflict(format!("user {} kept colliding on upsert", user.id)))
    })
    .await
}

/// A fresh view version for each user (concurrently), after the change it stands for.
pub(super) async fn bump_view_versions(s: &MongoStore, users: &[&str]) -> StoreResult<()> {
    futures::future::try_join_all(users.iter().map(|u| async move {
        for _ in 0..MAX_UPSERT_ATTEMPTS {
            let update = query::view_version_set(fresh_view_version());
            // Two first writes at once can both try to insert: the loser updates next round.
            match s.view_versions.update_one(query::user_key(u), update).upsert(true).await {
                Ok(_) => return Ok(()),
                Err(e) if is_duplicate_key(&e) => continue,
                Err(e) => return Err(map_err(e)),
            }
        }
        Err(StoreError::Conflict(format!("view version of {u} kept colliding on upsert")))
    }))
    .await
    .map(|_| ())
}

/// The participants' view versions after a receipt (the conversation is read for them).
async fn bump_participants(s: &MongoStore, id: ObjectId) -> StoreResult<()> {
    if let Some(conv) = s.conversation_by_key(query::by_id(id)).await? {
        let [a, b] = &conv.participants;
        bump_view_versions(s, &[a, b]).await?;
    }
    Ok(())
}

pub(super) async fn find_or_create_conversation(
    s: &MongoStore,
    a: &str,
    b: &str,
    job_id: Option<&str>,
) -> StoreResult<(Conversation, bool)> {
    let pair = sorted_pair(a, b);
    let key = query::conversation_key(&pair, job_id);
    s.call(async {
        for _ in 0..MAX_UPSERT_ATTEMPTS {
            let id = ObjectId::new();
            let res = s
                .conversations
                .find_one_and_update(key.clone(), query::conversation_insert(id, &pair, to_bson_time(&now())))
                .upsert(true)
                .return_document(ReturnDocument::After)
                .max_time(s.deadline)
                .await;
            match res {
                Ok(Some(conv)) => {
                    let created = conv.id == id;
                    if created {
                        bump_view_versions(s, &[&pair[0], &pair[1]]).await?;
                    }
                    return Ok((conv.into_domain(), created));
                }
                Ok(None) => {}
                // Another node created it first: it is there now.
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(map_err(e)),
            }
            if let Some(conv) = s.conversation_by_key(key.clone()).await? {
                return Ok((conv.into_domain(), false));
            }
        }
        Err(StoreError::Conflict("conversation creation kept colliding".into()))
    })
    .await
}

/// Step 1 (store with the next seq) must succeed; step 2 (settle the summary) may fail and is
/// then left for the next writer.
pub(super) async fn insert_message(s: &MongoStore, msg: NewMessage) -> StoreResult<Inserted> {
    let stored = s.call(flow::store_message(s, msg, &now())).await?;
    let (doc, conv, created) = match stored {
        Stored::Created(doc, conv) => (doc, Some(*conv), true),
        Stored::Existing(doc) => (doc, None, false),
    };
    // The message is durable: from here on, a failure only delays the summary (module docs).
    if let Err(e) = s.call(flow::settle(s, conv, &doc)).await {
        tracing::warn!(error = %e, conversation_id = %doc.conversation_id, seq = doc.seq,
            "message stored; conversation summary left for the next writer to catch up");
        metrics::counter!(DB_ERRORS_TOTAL, "op" => "settle_conversation").increment(1);
    }
    // Also on a retry: the original's bump may be the step that failed.
    s.call(bump_view_versions(s, &[&doc.sender_id, &doc.receiver_id])).await?;
    Ok(Inserted { message: doc.into_domain(), created })
}

pub(super) async fn mark_read(
    s: &MongoStore,
    conversation_id: &str,
    reader: &str,
    up_to_seq: Option<i64>,
) -> StoreResult<ReadReceipt> {
    let id = parse_id(conversation_id).ok_or(StoreError::NotFound)?;
    s.call(async {
        let receipt = flow::mark_read(s, id, reader, up_to_seq, now()).await?;
        bump_participants(s, id).await?;
        Ok(receipt)
    })
    .await
}

pub(super) async fn mark_delivered(
    s: &MongoStore,
    conversation_id: &str,
    receiver: &str,
    up_to_seq: i64,
) -> StoreResult<DeliveryReceipt> {
    let Some(id) = parse_id(conversation_id) else { return Ok(DeliveryReceipt { up_to_seq: 0, updated: 0 }) };
    s.call(async {
        let receipt = flow::mark_delivered(s, id, receiver, up_to_seq).await?;
        if receipt.changed() {
            bump_participants(s, id).await?;
        }
        Ok(receipt)
    })
    .await
}
