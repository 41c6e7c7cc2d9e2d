//! Every filter, update, sort and index document the store sends, built by small pure functions
//! so that each one is checked by an exact-BSON unit test (no server needed), one file per
//! collection: `conversations` (users too: a few keys), `messages`, and `indexes` (with the
//! check that every query can use the index it is written for, and the foreign-document
//! filters `migrate` runs before building them).

mod conversations;
mod indexes;
mod messages;

use bson::{Document, doc, oid::ObjectId};

pub(super) use self::{conversations::*, indexes::*, messages::*};

/// A `find`: filter, sort, limit (always > 0, so never "no limit"), skip and projection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FindSpec {
    pub filter: Document,
    pub sort: Document,
    pub limit: i64,
    pub skip: Option<u64>,
    pub projection: Option<Document>,
}

pub(crate) fn by_id(id: ObjectId) -> Document {
    doc! { "_id": id }
}

#[cfg(test)]
mod fixtures {
    use bson::oid::ObjectId;

    pub(super) fn oid(n: u8) -> ObjectId {
        let mut b = [0u8; 12];
        b[11] = n;
        ObjectId::from_bytes(b)
    }

    pub(super) fn pair() -> [String; 2] {
        ["alice".to_owned(), "bob.smith".to_owned()]
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::oid, *};

    #[test]
    fn id_filter() {
        assert_eq!(by_id(oid(1)), doc! { "_id": oid(1) });
    }
}
