//! The indexes every invariant rests on, and the filters that find documents this store could
//! not read in a database that already has collections of the same names.

use bson::{Document, doc};
use mongodb::{IndexModel, options::IndexOptions};

use crate::{
    chat::model::Role,
    store::mongo::schema::{CONVERSATIONS, MESSAGES, USERS, VIEW_VERSIONS},
};

// ---- existing databases ----------------------------------------------------------------------

/// Documents of `collection` (logical name) that this store could not read: written by another
/// service into a collection of the same name. `migrate` refuses to run on top of them.
pub(crate) fn foreign_documents(collection: &str) -> Document {
    match collection {
        USERS => doc! { "$or": [
            { "_id": { "$not": { "$type": "string" } } },
            { "name": { "$not": { "$type": "string" } } },
            { "role": { "$nin": [Role::Customer.as_str(), Role::Contractor.as_str(), Role::Admin.as_str()] } },
        ] },
        VIEW_VERSIONS => doc! { "$or": [
            { "_id": { "$not": { "$type": "string" } } },
            { "v": { "$not": { "$type": "long" } } },
        ] },
        CONVERSATIONS => doc! { "$or": [
            { "_id": { "$not": { "$type": "objectId" } } },
            { "userA": { "$not": { "$type": "string" } } },
            { "userB": { "$not": { "$type": "string" } } },
            { "participants": { "$exists": false } },
            { "lastSeq": { "$exists": false } },
            { "unread": { "$exists": false } },
        ] },
        _ => doc! { "$or": [
            { "_id": { "$not": { "$type": "objectId" } } },
            { "conversationId": { "$not": { "$type": "objectId" } } },
            { "seq": { "$exists": false } },
            { "senderId": { "$not": { "$type": "string" } } },
            { "status": { "$exists": false } },
        ] },
    }
}

// ---- indexes ---------------------------------------------------------------------------------

/// One index: collection, name, keys, uniqueness and partial filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IndexSpec {
    pub collection: &'static str,
    pub name: &'static str,
    pub keys: Document,
    pub unique: bool,
    pub partial: Option<Document>,
}

impl IndexSpec {
    pub fn model(&self) -> IndexModel {
        let options = IndexOptions::builder()
            .name(self.name.to_owned())
            .unique(self.unique.then_some(true))
            .partial_filter_expression(self.partial.clone())
            .build();
        IndexModel::builder().keys(self.keys.clone()).options(options).build()
    }
}

/// Every index, by collection. Named, so `createIndexes` is a no-op when they exist.
pub(crate) fn indexes() -> Vec<IndexSpec> {
    let spec = |collection, name, keys, unique, partial| IndexSpec { collection, name, keys, unique, partial };
    vec![
        // One conversation per (sorted pair, job): what makes concurrent creation converge.
        spec(CONVERSATIONS, "conversations_pair_job", doc! { "userA": 1, "userB": 1, "jobId": 1 }, true, None),
        // A user's conversations by last activity (list, partners, unread): serves both
        // "by participants" and "by last activity"; the keyset cursor needs `_id` as tiebreak.
        spec(
            CONVERSATIONS,
            "conversations_participants_activity",
            doc! { "participants": 1, "updatedAt": -1, "_id": -1 },
            false,
            None,
        ),
        // The seq allocator: a seq is taken by inserting the message that has it.
        spec(MESSAGES, "messages_conversation_seq", doc! { "conversationId": 1, "seq": 1 }, true, None),
        // Retry dedup; partial so that messages without a clientMessageId never collide.
        spec(
            MESSAGES,
            "messages_sender_client_id",
            doc! { "senderId": 1, "clientMessageId": 1 },
            true,
            Some(doc! { "clientMessageId": { "$type": "string" } }),
        ),
        spec(MESSAGES, "messages_sender", doc! { "senderId": 1 }, false, None),
        spec(MESSAGES, "messages_receiver_status", doc! { "receiverId": 1, "status": 1 }, false, None),
        // mark_read / mark_delivered / unread recount within one conversation.
        spec(
            MESSAGES,
            "messages_conversation_receiver_status_seq",
            doc! { "conversationId": 1, "receiverId": 1, "status": 1, "seq": 1 },
            false,
            None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use bson::{Bson, DateTime};

    use super::{
        super::{
            fixtures::{oid, pair},
            *,
        },
        *,
    };
    use crate::store::HistoryQuery;

    #[test]
    fn index_documents() {
        let got: Vec<_> = indexes().iter().map(|i| (i.collection, bson::to_document(&i.model()).unwrap())).collect();
        let want = vec![
            (
                "conversations",
                doc! {
                    "key": { "userA": 1, "userB": 1, "jobId": 1 }, "name": "conversations_pair_job", "unique": true,
                },
            ),
            (
                "conversations",
                doc! {
                    "key": { "participants": 1, "updatedAt": -1, "_id": -1 },
                    "name": "conversations_participants_activity",
                },
            ),
            (
                "messages",
                doc! { "key": { "conversationId": 1, "seq": 1 }, "name": "messages_conversation_seq", "unique": true },
            ),
            (
                "messages",
                doc! {
                    "key": { "senderId": 1, "clientMessageId": 1 },
                    "name": "messages_sender_client_id",
                    "unique": true,
                    "partialFilterExpression": { "clientMessageId": { "$type": "string" } },
                },
            ),
            ("messages", doc! { "key": { "senderId": 1 }, "name": "messages_sender" }),
            ("messages", doc! { "key": { "receiverId": 1, "status": 1 }, "name": "messages_receiver_status" }),
            (
                "messages",
                doc! {
                    "key": { "conversationId": 1, "receiverId": 1, "status": 1, "seq": 1 },
                    "name": "messages_conversation_receiver_status_seq",
                },
            ),
        ];
        assert_eq!(got, want);
    }

    // ---- the partial-index rule ---------------------------------------------------------------

    /// The field predicates of a filter: `{f: {$op: v, …}}` as is, `{f: v}` as `{$eq: v}`;
    /// `$and` flattened. Other top-level operators (`$or`) are kept whole under their name.
    fn predicates(filter: &Document) -> Vec<(String, Document)> {
        let mut out = Vec::new();
        for (k, v) in filter {
            match (k.as_str(), v) {
                ("$and", Bson::Array(parts)) => {
                    out.extend(parts.iter().filter_map(Bson::as_document).flat_map(predicates));
                }
                (_, Bson::Document(d)) if d.keys().next().is_some_and(|op| op.starts_with('$')) => {
                    out.push((k.clone(), d.clone()))
                }
                _ => out.push((k.clone(), doc! { "$eq": v.clone() })),
            }
        }
        out
    }

    fn number(b: &Bson) -> Option<f64> {
        match b {
            Bson::Int32(v) => Some(f64::from(*v)),
            Bson::Int64(v) => Some(*v as f64),
            Bson::Double(v) => Some(*v),
            _ => None,
        }
    }

    /// Whether the query's conditions on one field (`q`) imply `op: v`.
    fn implies_one(q: &Document, op: &str, v: &Bson) -> bool {
        if q.get(op) == Some(v) {
            return true;
        }
        let eq = q.get("$eq");
        let at_least = |strict: bool| {
            let Some(bound) = number(v) else { return false };
            let ok = |x: f64, incl: bool| if strict { x > bound || (x == bound && !incl) } else { x >= bound };
            eq.and_then(number).is_some_and(|x| ok(x, true))
                || q.get("$gt").and_then(number).is_some_and(|x| ok(x, false) || x == bound)
                || q.get("$gte").and_then(number).is_some_and(|x| ok(x, true))
        };
        let at_most = |strict: bool| {
            let Some(bound) = number(v) else { return false };
            let ok = |x: f64, incl: bool| if strict { x < bound || (x == bound && !incl) } else { x <= bound };
            eq.and_then(number).is_some_and(|x| ok(x, true))
                || q.get("$lt").and_then(number).is_some_and(|x| ok(x, false) || x == bound)
                || q.get("$lte").and_then(number).is_some_and(|x| ok(x, true))
        };
        match op {
            // An equality on a non-null value, or a `$type`, implies the field exists.
            "$exists" if v == &Bson::Boolean(true) => {
                eq.is_some_and(|e| e != &Bson::Null) || q.contains_key("$type") || q.contains_key("$gt")
            }
            "$gt" => at_least(true),
            "$gte" => at_least(false),
            "$lt" => at_most(true),
            "$lte" => at_most(false),
            // Deliberately no rule for `$type`: the planner has none (an equality on a string
            // does not let it use an index partial on `$type: "string"`).
            _ => false,
        }
    }

    /// The manual's rule for partial indexes: a query can use one only if its conditions
    /// contain the index's filter expression, or a narrower form of it (a tighter range, an
    /// equality inside it). This checker is the conservative part of the planner's logic:
    /// what it accepts, the planner accepts.
    fn implies(query: &Document, filter: &Document) -> bool {
        let q = predicates(query);
        predicates(filter)
            .iter()
            .all(|(field, ops)| ops.iter().all(|(op, v)| q.iter().any(|(f, qo)| f == field && implies_one(qo, op, v))))
    }

    /// Every query, with the index it is written for.
    fn queries_and_their_indexes() -> Vec<(&'static str, &'static str, Document)> {
        let c = oid(1);
        let q = |s: FindSpec| s.filter;
        vec![
            (MESSAGES, "messages_sender_client_id", by_client_id("alice", "m-1")),
            (MESSAGES, "messages_conversation_seq", q(messages_after(c, 3, 10))),
            (MESSAGES, "messages_conversation_seq", q(newest_seq(c))),
            (
                MESSAGES,
                "messages_conversation_seq",
                q(history(c, &HistoryQuery { before_seq: Some(9), skip: 0, limit: 5 })),
            ),
            (
                MESSAGES,
                "messages_conversation_seq",
                q(history(c, &HistoryQuery { before_seq: None, skip: 5, limit: 5 })),
            ),
            (MESSAGES, "messages_conversation_receiver_status_seq", unread_messages(c, "bob", 9)),
            (MESSAGES, "messages_conversation_receiver_status_seq", undelivered_messages(c, "bob", 9)),
            (CONVERSATIONS, "conversations_pair_job", conversation_key(&pair(), Some("j"))),
            (CONVERSATIONS, "conversations_pair_job", conversation_key(&pair(), None)),
            (CONVERSATIONS, "conversations_participants_activity", conversations_of("u", None)),
            (
                CONVERSATIONS,
                "conversations_participants_activity",
                conversations_of("u", Some((DateTime::from_millis(1), c))),
            ),
            (CONVERSATIONS, "conversations_participants_activity", unread_of("u")),
        ]
    }

    #[test]
    fn every_query_can_use_the_index_it_is_written_for() {
        let all = indexes();
        for (collection, name, query) in queries_and_their_indexes() {
            let index = all.iter().find(|i| i.collection == collection && i.name == name).expect(name);
            let first = index.keys.keys().next().unwrap();
            assert!(
                predicates(&query).iter().any(|(f, ops)| f == first && ops.contains_key("$eq")),
                "{name}: the query {query} has no equality on the leading key {first}"
            );
            if let Some(partial) = &index.partial {
                assert!(
                    implies(&query, partial),
                    "{name} is partial on {partial}; the query {query} does not imply it"
                );
            }
        }
    }

    #[test]
    fn every_partial_index_has_its_queries_checked() {
        let checked: Vec<_> = queries_and_their_indexes().into_iter().map(|(_, n, _)| n).collect();
        for i in indexes().iter().filter(|i| i.partial.is_some()) {
            assert!(checked.contains(&i.name), "partial index {} has no query in the table above", i.name);
        }
    }

    /// The rule itself, on the cases that matter, including the one the dedup look-up hit.
    #[test]
    fn the_partial_index_rule() {
        let on_type = doc! { "clientMessageId": { "$type": "string" } };
        assert!(!implies(&doc! { "senderId": "a", "clientMessageId": "m1" }, &on_type), "no $type rule for equality");
        assert!(implies(&doc! { "senderId": "a", "clientMessageId": { "$eq": "m1", "$type": "string" } }, &on_type));
        assert!(implies(&doc! { "$and": [ { "clientMessageId": { "$type": "string" } } ] }, &on_type));
        assert!(!implies(&doc! { "clientMessageId": { "$type": "int" } }, &on_type));
        let rating = doc! { "rating": { "$gt": 5 } };
        assert!(implies(&doc! { "rating": { "$gte": 8 } }, &rating), "the manual's example");
        assert!(implies(&doc! { "rating": 6 }, &rating));
        assert!(!implies(&doc! { "rating": { "$lt": 8 } }, &rating), "the manual's counter-example");
        assert!(!implies(&doc! { "rating": { "$gte": 5 } }, &rating));
        assert!(implies(&doc! { "rating": { "$gt": 5 } }, &rating));
        let exists = doc! { "email": { "$exists": true } };
        assert!(implies(&doc! { "email": "x@y" }, &exists));
        assert!(!implies(&doc! { "email": Bson::Null }, &exists));
        assert!(!implies(&doc! { "name": "x" }, &exists));
    }

    #[test]
    fn foreign_document_filters() {
        assert_eq!(
            foreign_documents(USERS),
            doc! { "$or": [
                { "_id": { "$not": { "$type": "string" } } },
                { "name": { "$not": { "$type": "string" } } },
                { "role": { "$nin": ["customer", "contractor", "admin"] } },
            ] }
        );
        assert!(
            foreign_documents(CONVERSATIONS)
                .get_array("$or")
                .unwrap()
                .contains(&Bson::from(doc! { "lastSeq": { "$exists": false } }))
        );
        assert!(
            foreign_documents(MESSAGES)
                .get_array("$or")
                .unwrap()
                .contains(&Bson::from(doc! { "seq": { "$exists": false } }))
        );
    }
}
