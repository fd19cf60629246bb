//! Buckets: validation of names and configs (spec A2.4), the `buckets_config` table and the
//! per-bucket table with its indexes (A2.1, A2.2), create/update/delete/get/list (A6.7), and
//! the in-process bucket cache (A9). The operations themselves are in [`ops`].
//!
//! A bucket's table is its name in lower case (as Triton's unquoted DDL makes it); every
//! identifier is validated and quoted. Each index column is named for its field, in lower
//! case. Each loaded [`Bucket`] carries the SQL of its hot statements, built once.

pub mod ops;

pub use ops::bucket_to_proto;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::compile::QuerySchema;
use crate::error::MorayError;
use crate::types::IndexType;

/// Bucket names Triton reserves, plus the tables this implementation keeps for itself.
pub const RESERVED_BUCKETS: &[&str] = &[
    "buckets_config",
    "moray",
    "search",
    "moray_changes",
    "moray_changes_state",
];

/// Index names reserved for Moray's own columns (compared ignoring case).
pub const RESERVED_INDEXES: &[&str] = &[
    "_etag",
    "_id",
    "_idx",
    "_key",
    "_atime",
    "_ctime",
    "_mtime",
    "_rver",
    "_txn_snap",
    "_value",
    "_vnode",
];

/// PostgreSQL's identifier limit; longer names would be silently truncated.
const MAX_IDENTIFIER: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexDef {
    pub ty: IndexType,
    pub unique: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketOptions {
    /// 0: unversioned.
    pub version: u32,
    pub guarantee_order: bool,
}

/// A validated bucket config: what create and update take.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BucketConfig {
    pub index: BTreeMap<String, IndexDef>,
    pub options: BucketOptions,
}

/// One index column of a bucket's table.
#[derive(Debug, Clone)]
pub struct Column {
    pub field: String,
    /// Quoted column name.
    pub ident: String,
    pub ty: IndexType,
    pub unique: bool,
    /// Being reindexed: written, but neither trusted on read nor used in filters.
    pub reindexing: bool,
}

/// A bucket as loaded from `buckets_config`, with its prepared SQL.
#[derive(Debug)]
pub struct Bucket {
    pub name: String,
    /// Quoted table name.
    pub table: String,
    pub config: BucketConfig,
    pub reindex_active: BTreeMap<u32, Vec<String>>,
    /// `mtime` of the config row as text: compared in every put, so a put never writes
    /// with an outdated config.
    pub token: String,
    /// RFC 3339 form of `mtime`.
    pub mtime: String,
    /// Index columns, by field name.
    pub columns: Vec<Column>,
    pub schema: QuerySchema,
    pub sql: BucketSql,
}

/// Positions in [`BucketSql::select`].
pub const COL_ID: usize = 0;
pub const COL_KEY: usize = 1;
pub const COL_ETAG: usize = 2;
pub const COL_MTIME: usize = 3;
pub const COL_TXN_SNAP: usize = 4;
pub const COL_VALUE: usize = 5;
pub const COL_FIRST_INDEX: usize = 6;

/// A bucket's statements. Put parameters: $1 bucket name, $2 config token, $3 key,
/// $4 value, $5 etag, $6 mtime, $7 vnode, $8 rver, then one per index column, then (for
/// `put_if_match`) the expected etag.
#[derive(Debug, Default)]
pub struct BucketSql {
    /// `_id, _key, _etag, _mtime, _txn_snap, _value, <index columns>`
    pub select: String,
    pub put: String,
    pub put_if_absent: String,
    pub put_if_match: String,
    pub get: String,
    /// `get` for several keys: $1 the keys, `text[]`
    pub get_many: String,
    /// $1 key, $2 bucket name, $3 mtime
    pub delete: String,
    /// as `delete`, $4 expected etag
    pub delete_if_match: String,
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A relation name derived from `base` (lower-cased) and `suffix`, kept within PostgreSQL's
/// identifier limit by replacing the overflow with a hash, so two long names never collide
/// by truncation.
pub fn relation_name(base: &str, suffix: &str) -> String {
    let full = format!("{}{suffix}", base.to_lowercase());
    if full.len() <= MAX_IDENTIFIER {
        return full;
    }
    let hash = format!("_{:08x}", crc32fast::hash(full.as_bytes()));
    let mut keep = MAX_IDENTIFIER - hash.len() - suffix.len();
    let lower = base.to_lowercase();
    while !lower.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{hash}{suffix}", &lower[..keep])
}

pub fn validate_bucket_name(name: &str) -> Result<(), MorayError> {
    let bad = |reason: &str| MorayError::InvalidBucketName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let b = name.as_bytes();
    if b.is_empty() || b.len() > MAX_IDENTIFIER {
        return Err(bad("a bucket name has 1 to 63 characters"));
    }
    if !b[0].is_ascii_alphabetic() || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') {
        return Err(bad(
            "a bucket name starts with a letter and has only letters, digits and _",
        ));
    }
    if RESERVED_BUCKETS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(bad("the name is reserved for Moray's own tables"));
    }
    Ok(())
}

/// Triton's index name rule: `^(_[a-zA-Z0-9]+|[a-zA-Z][_a-zA-Z0-9]*[a-zA-Z0-9]|[a-zA-Z])$`,
/// not reserved, not starting with `moray` (after any underscores).
pub fn validate_index_name(name: &str) -> Result<(), MorayError> {
    let bad = |reason: String| MorayError::InvalidBucketConfig(format!("index {name:?}: {reason}"));
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    let ok = match b {
        [] => false,
        [b'_', rest @ ..] => !rest.is_empty() && rest.iter().all(alnum),
        [first] => first.is_ascii_alphabetic(),
        [first, middle @ .., last] => {
            first.is_ascii_alphabetic()
                && middle.iter().all(|c| alnum(c) || *c == b'_')
                && alnum(last)
        }
    };
    if !ok {
        return Err(bad(
            "an index name is a letter followed by letters, digits and _ (not ending in _), or _ followed by letters and digits".into(),
        ));
    }
    if b.len() > MAX_IDENTIFIER {
        return Err(bad("an index name has at most 63 characters".into()));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_INDEXES.contains(&lower.as_str()) {
        return Err(bad("the name is reserved for Moray's own columns".into()));
    }
    if lower.trim_start_matches('_').starts_with("moray") {
        return Err(bad("index names cannot start with \"moray\"".into()));
    }
    Ok(())
}

impl BucketConfig {
    /// Validates index names and types from their wire form (`(name, type, unique)`).
    pub fn from_parts(
        index: impl IntoIterator<Item = (String, String, bool)>,
        version: u32,
        guarantee_order: bool,
    ) -> Result<BucketConfig, MorayError> {
        let mut out = BTreeMap::new();
        let mut lower_names = HashSet::new();
        for (name, ty, unique) in index {
            validate_index_name(&name)?;
            let Some(parsed) = IndexType::parse(&ty) else {
                return Err(MorayError::InvalidIndexDefinition {
                    field: name,
                    index_type: ty,
                });
            };
            if !lower_names.insert(name.to_lowercase()) {
                return Err(MorayError::InvalidBucketConfig(format!(
                    "index {name:?}: another index has the same name ignoring case"
                )));
            }
            out.insert(name, IndexDef { ty: parsed, unique });
        }
        Ok(BucketConfig {
            index: out,
            options: BucketOptions {
                version,
                guarantee_order,
            },
        })
    }

    fn index_json(&self) -> String {
        let m: Map<String, Value> = self
            .index
            .iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    json!({"type": d.ty.to_string(), "unique": d.unique}),
                )
            })
            .collect();
        Value::Object(m).to_string()
    }

    fn options_json(&self) -> String {
        let mut o = json!({"version": self.options.version});
        if self.options.guarantee_order {
            o["guaranteeOrder"] = Value::Bool(true);
        }
        o.to_string()
    }
}

fn reindex_json(r: &BTreeMap<u32, Vec<String>>) -> String {
    let m: Map<String, Value> = r.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    Value::Object(m).to_string()
}

impl Bucket {
    /// Builds a bucket from its `buckets_config` row.
    pub fn from_row(
        name: String,
        index: &str,
        options: Option<&str>,
        reindex_active: Option<&str>,
        token: String,
    ) -> Result<Bucket, MorayError> {
        let corrupt = |what: &str, e: String| {
            MorayError::Internal(format!("buckets_config row of {name}: {what}: {e}"))
        };
        let index: Map<String, Value> =
            serde_json::from_str(index).map_err(|e| corrupt("index", e.to_string()))?;
        let mut defs = BTreeMap::new();
        for (field, def) in index {
            let ty = def
                .get("type")
                .and_then(Value::as_str)
                .and_then(IndexType::parse)
                .ok_or_else(|| corrupt("index", format!("bad type for {field}")))?;
            let unique = def.get("unique").and_then(Value::as_bool).unwrap_or(false);
            defs.insert(field, IndexDef { ty, unique });
        }
        let options: Value = match options {
            Some(o) if !o.is_empty() => {
                serde_json::from_str(o).map_err(|e| corrupt("options", e.to_string()))?
            }
            _ => json!({}),
        };
        let version = options
            .get("version")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let guarantee_order = options
            .get("guaranteeOrder")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut reindex = BTreeMap::new();
        if let Some(r) = reindex_active.filter(|r| !r.is_empty()) {
            let m: Map<String, Value> =
                serde_json::from_str(r).map_err(|e| corrupt("reindex_active", e.to_string()))?;
            for (v, fields) in m {
                let v: u32 = v
                    .parse()
                    .map_err(|_| corrupt("reindex_active", format!("bad version {v}")))?;
                let fields: Vec<String> = fields
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                if !fields.is_empty() {
                    reindex.insert(v, fields);
                }
            }
        }
        let mtime = format!("{}Z", token.replacen(' ', "T", 1));
        Ok(Bucket::new(
            name,
            BucketConfig {
                index: defs,
                options: BucketOptions {
                    version,
                    guarantee_order,
                },
            },
            reindex,
            token,
            mtime,
        ))
    }

    pub fn new(
        name: String,
        config: BucketConfig,
        reindex_active: BTreeMap<u32, Vec<String>>,
        token: String,
        mtime: String,
    ) -> Bucket {
        let reindexing: HashSet<String> = reindex_active.values().flatten().cloned().collect();
        let columns: Vec<Column> = config
            .index
            .iter()
            .map(|(field, def)| Column {
                field: field.clone(),
                ident: quote_ident(&field.to_lowercase()),
                ty: def.ty,
                unique: def.unique,
                reindexing: reindexing.contains(field),
            })
            .collect();
        let schema = QuerySchema {
            bucket: name.clone(),
            fields: columns
                .iter()
                .filter(|c| !c.reindexing)
                .map(|c| (c.field.clone(), (c.ty, c.ident.clone())))
                .collect(),
            reindexing: reindexing
                .iter()
                .filter(|f| config.index.contains_key(*f))
                .cloned()
                .collect(),
        };
        let table = quote_ident(&name.to_lowercase());
        let mut bucket = Bucket {
            sql: BucketSql::default(),
            name,
            table,
            config,
            reindex_active,
            token,
            mtime,
            columns,
            schema,
        };
        bucket.sql = bucket.build_sql();
        bucket
    }

    pub fn versioned(&self) -> bool {
        self.config.options.version > 0
    }

    /// Fields whose columns are not trusted (being reindexed).
    pub fn is_reindexing(&self) -> bool {
        !self.reindex_active.is_empty()
    }

    fn locking_table(&self) -> String {
        quote_ident(&relation_name(&self.name, "_locking_serial"))
    }

    fn build_sql(&self) -> BucketSql {
        let t = &self.table;
        let idents: Vec<&str> = self.columns.iter().map(|c| c.ident.as_str()).collect();
        let mut select = String::from("_id, _key, _etag, _mtime, _txn_snap, _value");
        for i in &idents {
            select.push_str(", ");
            select.push_str(i);
        }
        let n = self.columns.len();
        let value_params: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}{}", 9 + i, c.ty.param_cast()))
            .collect();
        let etag_param = format!("${}", 9 + n);
        let guard = "guard AS (SELECT 1 FROM buckets_config WHERE name = $1::text AND mtime::text = $2::text)";
        let (lock_cte, txn_col, txn_val) = if self.config.options.guarantee_order {
            (
                format!(
                    ", lk AS (UPDATE {} SET id = id + 1 RETURNING id)",
                    self.locking_table()
                ),
                ", _txn_snap",
                ", (SELECT id FROM lk)",
            )
        } else {
            (String::new(), "", "")
        };
        let mut insert_cols = format!("_key, _value, _etag, _mtime, _vnode, _rver{txn_col}");
        let mut insert_vals =
            format!("$3::text, $4::text, $5::text, $6::int8, $7::int8, $8::int4{txn_val}");
        for (i, v) in idents.iter().zip(&value_params) {
            insert_cols.push_str(", ");
            insert_cols.push_str(i);
            insert_vals.push_str(", ");
            insert_vals.push_str(v);
        }
        let mut set_excluded = String::from(
            "_value = EXCLUDED._value, _etag = EXCLUDED._etag, _mtime = EXCLUDED._mtime, _vnode = EXCLUDED._vnode, _rver = EXCLUDED._rver",
        );
        if !txn_col.is_empty() {
            set_excluded.push_str(", _txn_snap = EXCLUDED._txn_snap");
        }
        let mut set_params = format!(
            "_value = $4::text, _etag = $5::text, _mtime = $6::int8, _vnode = $7::int8, _rver = $8::int4{}",
            if txn_col.is_empty() {
                ""
            } else {
                ", _txn_snap = (SELECT id FROM lk)"
            }
        );
        for (i, v) in idents.iter().zip(&value_params) {
            set_excluded.push_str(&format!(", {i} = EXCLUDED.{i}"));
            set_params.push_str(&format!(", {i} = {v}"));
        }
        let change = "ch AS (INSERT INTO moray_changes (bucket, key, op, value, etag, mtime) SELECT $1::text, $3::text, 1, $4::text, $5::text, $6::int8 FROM up)";
        let put = format!(
            "WITH {guard}{lock_cte}, up AS (INSERT INTO {t} AS o ({insert_cols}) SELECT {insert_vals} FROM guard ON CONFLICT (_key) DO UPDATE SET {set_excluded} RETURNING o._id), {change} SELECT _id FROM up"
        );
        let put_if_absent = format!(
            "WITH {guard}{lock_cte}, up AS (INSERT INTO {t} AS o ({insert_cols}) SELECT {insert_vals} FROM guard ON CONFLICT (_key) DO NOTHING RETURNING o._id), {change} SELECT _id FROM up"
        );
        let put_if_match = format!(
            "WITH {guard}{lock_cte}, up AS (UPDATE {t} AS o SET {set_params} FROM guard WHERE o._key = $3::text AND o._etag = {etag_param}::text RETURNING o._id), {change} SELECT _id FROM up"
        );
        let get = format!("SELECT {select} FROM {t} WHERE _key = $1::text");
        let get_many = format!("SELECT {select} FROM {t} WHERE _key = ANY($1::text[])");
        let del_change = "ch AS (INSERT INTO moray_changes (bucket, key, op, value, etag, mtime) SELECT $2::text, $1::text, 2, NULL, _etag, $3::int8 FROM del)";
        let delete = format!(
            "WITH del AS (DELETE FROM {t} WHERE _key = $1::text RETURNING _etag), {del_change} SELECT _etag FROM del"
        );
        let delete_if_match = format!(
            "WITH del AS (DELETE FROM {t} WHERE _key = $1::text AND _etag = $4::text RETURNING _etag), {del_change} SELECT _etag FROM del"
        );
        BucketSql {
            select,
            put,
            put_if_absent,
            put_if_match,
            get,
            get_many,
            delete,
            delete_if_match,
        }
    }

    /// The DDL that creates this bucket's table, sequence and indexes.
    pub fn create_ddl(&self) -> Vec<String> {
        let t = &self.table;
        let serial = quote_ident(&relation_name(&self.name, "_serial"));
        let mut ddl = vec![format!("CREATE SEQUENCE {serial}")];
        if self.config.options.guarantee_order {
            ddl.push(format!(
                "CREATE TABLE {} (id INTEGER PRIMARY KEY)",
                self.locking_table()
            ));
            ddl.push(format!(
                "INSERT INTO {} (id) VALUES (1)",
                self.locking_table()
            ));
        }
        let mut cols = vec![
            format!(
                "_id BIGINT NOT NULL DEFAULT nextval('{}')",
                serial.replace('\'', "''")
            ),
            "_txn_snap INTEGER".to_string(),
            "_key TEXT PRIMARY KEY".to_string(),
            "_value TEXT NOT NULL".to_string(),
            "_etag TEXT NOT NULL".to_string(),
            "_mtime BIGINT NOT NULL".to_string(),
            "_vnode BIGINT".to_string(),
            "_rver INTEGER".to_string(),
        ];
        for c in &self.columns {
            cols.push(format!(
                "{} {}{}",
                c.ident,
                c.ty.pg_column(),
                if c.unique { " UNIQUE" } else { "" }
            ));
        }
        ddl.push(format!("CREATE TABLE {t} ({})", cols.join(", ")));
        ddl.push(format!("ALTER SEQUENCE {serial} OWNED BY {t}._id"));
        for internal in ["_id", "_etag", "_mtime", "_vnode"] {
            ddl.push(self.internal_index_ddl(internal));
        }
        if self.versioned() {
            ddl.push(self.rver_index_ddl());
        }
        for c in self.columns.iter().filter(|c| !c.unique) {
            ddl.push(self.index_ddl(c));
        }
        ddl
    }

    fn internal_index_ddl(&self, col: &str) -> String {
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} USING BTREE ({col}) WHERE {col} IS NOT NULL",
            quote_ident(&relation_name(&self.name, &format!("_{col}_idx"))),
            self.table
        )
    }

    pub fn rver_index_ddl(&self) -> String {
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} USING BTREE (_rver)",
            quote_ident(&relation_name(&self.name, "__rver_idx")),
            self.table
        )
    }

    pub fn index_ddl(&self, c: &Column) -> String {
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} USING {} ({}) WHERE {} IS NOT NULL",
            quote_ident(&relation_name(
                &self.name,
                &format!("_{}_idx", c.field.to_lowercase())
            )),
            self.table,
            c.ty.index_method(),
            c.ident,
            c.ident
        )
    }

    pub fn drop_ddl(&self) -> Vec<String> {
        vec![
            format!("DROP TABLE IF EXISTS {}", self.table),
            format!(
                "DROP SEQUENCE IF EXISTS {}",
                quote_ident(&relation_name(&self.name, "_serial"))
            ),
            format!("DROP TABLE IF EXISTS {}", self.locking_table()),
        ]
    }

    pub fn index_json(&self) -> String {
        self.config.index_json()
    }

    pub fn options_json(&self) -> String {
        self.config.options_json()
    }

    pub fn reindex_json(&self) -> String {
        reindex_json(&self.reindex_active)
    }
}

/// What an UpdateBucket changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IndexDiff {
    pub added: Vec<String>,
    pub deleted: Vec<String>,
    /// Type or uniqueness changed: the column is rebuilt (dropped, added, reindexed).
    pub modified: Vec<String>,
}

pub fn diff(old: &BucketConfig, new: &BucketConfig) -> IndexDiff {
    let mut d = IndexDiff::default();
    for (k, def) in &new.index {
        match old.index.get(k) {
            None => d.added.push(k.clone()),
            Some(o) if o != def => d.modified.push(k.clone()),
            Some(_) => {}
        }
    }
    for k in old.index.keys() {
        if !new.index.contains_key(k) {
            d.deleted.push(k.clone());
        }
    }
    d
}

/// The new `reindex_active` after an update (Triton: `reindex_active[version] += added`).
pub fn next_reindex_active(
    current: &BTreeMap<u32, Vec<String>>,
    new: &BucketConfig,
    changed: &[String],
    no_reindex: bool,
) -> BTreeMap<u32, Vec<String>> {
    let mut r: BTreeMap<u32, Vec<String>> = current
        .iter()
        .map(|(v, fields)| {
            (
                *v,
                fields
                    .iter()
                    .filter(|f| new.index.contains_key(*f))
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, f)| !f.is_empty())
        .collect();
    if new.options.version > 0 && !no_reindex && !changed.is_empty() {
        let entry = r.entry(new.options.version).or_default();
        for f in changed {
            if !entry.contains(f) {
                entry.push(f.clone());
            }
        }
    }
    r
}

/// Per-process cache of bucket configs. Entries are dropped when this process changes the
/// bucket, when a put finds the config changed, and after a TTL.
pub struct BucketCache {
    map: RwLock<HashMap<String, (Arc<Bucket>, Instant)>>,
    ttl: Duration,
}

/// Cached buckets kept at most (Triton: an LRU of 100).
const MAX_CACHED_BUCKETS: usize = 1000;

impl BucketCache {
    pub fn new(ttl: Duration) -> BucketCache {
        BucketCache {
            map: RwLock::new(HashMap::new()),
            ttl,
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Bucket>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(name)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(b, _)| b.clone())
    }

    pub fn insert(&self, bucket: Arc<Bucket>) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHED_BUCKETS {
            map.clear();
        }
        map.insert(bucket.name.clone(), (bucket, Instant::now()));
    }

    pub fn invalidate(&self, name: &str) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `validate` takes every name of `ok` and refuses every name of `bad` with an error
    /// `refused` matches.
    fn check_names(
        validate: fn(&str) -> Result<(), MorayError>,
        ok: &[&str],
        bad: &[&str],
        refused: fn(&MorayError) -> bool,
    ) {
        for name in ok {
            assert!(validate(name).is_ok(), "{name}");
        }
        for name in bad {
            let e = validate(name).expect_err(name);
            assert!(refused(&e), "{name}: {e:?}");
        }
    }

    #[test]
    fn bucket_names() {
        let long_ok = "x".repeat(63);
        let long_bad = "x".repeat(64);
        check_names(
            validate_bucket_name,
            &["a", "vmapi_vms", "A1_b", &long_ok],
            &[
                "",
                "1a",
                "_a",
                "a-b",
                "a b",
                "moray",
                "search",
                "BUCKETS_CONFIG",
                &long_bad,
                "é",
            ],
            |e| matches!(e, MorayError::InvalidBucketName { .. }),
        );
    }

    #[test]
    fn index_names() {
        check_names(
            validate_index_name,
            &["a", "ab", "a_b", "_a1", "owner_uuid", "A9"],
            &[
                "",
                "_",
                "a_",
                "1a",
                "_a_b",
                "a-b",
                "_id",
                "_ETAG",
                "moray_x",
                "__morayfoo",
                "Moray",
            ],
            |e| matches!(e, MorayError::InvalidBucketConfig(_)),
        );
    }

    #[test]
    fn unknown_types_and_case_duplicates() {
        let e =
            BucketConfig::from_parts([("a".into(), "text".into(), false)], 0, false).unwrap_err();
        assert!(matches!(e, MorayError::InvalidIndexDefinition { .. }));
        let e = BucketConfig::from_parts(
            [
                ("a".into(), "string".into(), false),
                ("A".into(), "string".into(), false),
            ],
            0,
            false,
        )
        .unwrap_err();
        assert!(matches!(e, MorayError::InvalidBucketConfig(_)));
    }

    #[test]
    fn long_relation_names_stay_distinct() {
        let a = relation_name(&"a".repeat(63), "_locking_serial");
        let b = relation_name(&format!("{}b", "a".repeat(62)), "_locking_serial");
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
        assert_eq!(relation_name("Foo", "_serial"), "foo_serial");
    }

    #[test]
    fn reindex_bookkeeping() {
        let mut cur = BTreeMap::new();
        cur.insert(2, vec!["a".to_string(), "gone".to_string()]);
        let new = BucketConfig::from_parts(
            [
                ("a".into(), "string".into(), false),
                ("b".into(), "number".into(), false),
            ],
            3,
            false,
        )
        .unwrap();
        let r = next_reindex_active(&cur, &new, &["b".to_string()], false);
        assert_eq!(r.get(&2), Some(&vec!["a".to_string()]));
        assert_eq!(r.get(&3), Some(&vec!["b".to_string()]));
        assert_eq!(
            next_reindex_active(&BTreeMap::new(), &new, &["b".to_string()], true),
            BTreeMap::new()
        );
    }
}
