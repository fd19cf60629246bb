//! Object operations (spec A6): put, get, delete, find, updateObjects, deleteMany,
//! reindexObjects and batch.
//!
//! Every write records its change in `moray_changes` in the same statement or transaction
//! (see `feed.rs`). A put is one statement: a guard that the bucket config it was built
//! from is still current, the conditional insert/update, and the change-log insert.

mod batch;
mod find;
mod multi;
mod reindex;
mod rows;
mod single;
mod update;

pub use find::{FindOpts, RowSender};
pub use rows::merge_columns;

use triton_proto::moray::v1 as pb;

use crate::error::MorayError;

/// Rows a find returns without `limit` (Triton's default).
pub const DEFAULT_LIMIT: u64 = 1000;
/// Attempts of a put whose bucket config changed under it.
const PUT_ATTEMPTS: usize = 3;
/// Most keys one GetObjects may ask for: its keys go to PostgreSQL as one array per
/// bucket and its answer is one message, so both stay small (clients that coalesce
/// concurrent gets send far fewer).
pub const MAX_GET_OBJECTS_KEYS: usize = 1000;
/// Most items one PutObjects may carry (its items share one transaction and one answer).
pub const MAX_PUT_OBJECTS_ITEMS: usize = 1000;

/// Etag condition: None = no check; Some(None) = must not exist; Some(Some(e)) = must match.
pub type EtagCondition = Option<Option<String>>;

pub fn etag_condition(c: Option<pb::EtagCondition>) -> EtagCondition {
    c.map(|c| c.etag)
}

/// One object to write, as PutObject, PutObjects and Batch carry it: where, the value as
/// sent (`raw`) and parsed, and the etag condition.
#[derive(Clone, Copy)]
pub(crate) struct Put<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub raw: &'a str,
    pub value: &'a serde_json::Map<String, serde_json::Value>,
    pub etag: &'a EtagCondition,
}

impl<'a> Put<'a> {
    pub fn new(
        req: &'a pb::PutObjectRequest,
        value: &'a serde_json::Map<String, serde_json::Value>,
        etag: &'a EtagCondition,
    ) -> Put<'a> {
        Put {
            bucket: &req.bucket,
            key: &req.key,
            raw: &req.value,
            value,
            etag,
        }
    }
}

/// The etag of a serialized value: CRC32, 8 upper-case hex digits.
pub fn etag_of(value: &str) -> String {
    format!("{:08X}", crc32fast::hash(value.as_bytes()))
}

/// A GetObjects result for a key whose read failed with `e`.
fn object_error(e: &MorayError) -> pb::get_object_result::Result {
    pb::get_object_result::Result::Error(error_of(e))
}

/// `e` as the error of one item of GetObjects or PutObjects.
fn error_of(e: &MorayError) -> pb::ObjectError {
    pb::ObjectError {
        name: e.name().to_string(),
        message: e.to_string(),
        code: e.code() as i32,
    }
}

/// A PutObjects result: the item's etag, or its error.
fn put_result(r: Result<String, pb::ObjectError>) -> pb::PutObjectResult {
    use pb::put_object_result::Result as R;
    pb::PutObjectResult {
        result: Some(match r {
            Ok(etag) => R::Object(pb::PutObjectResponse { etag }),
            Err(e) => R::Error(e),
        }),
    }
}

/// Whether a put that failed with `e` left its transaction usable: these errors come
/// from checks made before or after the statement (a zero-row conditional write and
/// the follow-up read), not from a failed SQL statement, which aborts the transaction.
fn keeps_transaction(e: &MorayError) -> bool {
    matches!(
        e,
        MorayError::EtagConflict { .. }
            | MorayError::BucketNotFound { .. }
            | MorayError::InvalidArgument { .. }
            | MorayError::InvalidIndexType { .. }
    )
}

fn check_key(key: &str) -> Result<(), MorayError> {
    if key.is_empty() {
        return Err(MorayError::invalid_argument("key", "must not be empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_upper_case_crc32() {
        assert_eq!(etag_of("{}"), format!("{:08X}", crc32fast::hash(b"{}")));
        assert_eq!(etag_of("{}").len(), 8);
        assert!(
            etag_of("{\"a\":1}")
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
    }
}
