//! createBucket, updateBucket, deleteBucket, getBucket and listBuckets (spec A6.7).

use std::collections::BTreeMap;
use std::sync::Arc;

use triton_proto::moray::v1 as pb;

use crate::buckets::{
    Bucket, BucketConfig, diff, next_reindex_active, quote_ident, relation_name,
    validate_bucket_name,
};
use crate::error::MorayError;
use crate::pool::PooledConn;
use crate::store::Store;

const SELECT_CONFIG: &str =
    "SELECT name, index, options, reindex_active, mtime::text FROM buckets_config";

fn config_from_proto(config: Option<pb::BucketConfig>) -> Result<BucketConfig, MorayError> {
    let config = config.unwrap_or_default();
    let options = config.options.unwrap_or_default();
    BucketConfig::from_parts(
        config
            .index
            .into_iter()
            .map(|(name, def)| (name, def.r#type, def.unique)),
        options.version,
        options.guarantee_order,
    )
}

/// The bucket's stored config, its row locked until the transaction ends.
async fn locked_config(conn: &mut PooledConn, name: &str) -> Result<Bucket, MorayError> {
    let row = conn
        .client
        .query_opt(
            &format!("{SELECT_CONFIG} WHERE name = $1::text FOR UPDATE"),
            &[&name],
        )
        .await?
        .ok_or_else(|| MorayError::BucketNotFound {
            bucket: name.to_string(),
        })?;
    bucket_from_row(&row)
}

pub fn bucket_to_proto(b: &Bucket) -> pb::Bucket {
    pb::Bucket {
        name: b.name.clone(),
        index: b
            .config
            .index
            .iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    pb::IndexDefinition {
                        r#type: d.ty.to_string(),
                        unique: d.unique,
                    },
                )
            })
            .collect(),
        options: Some(pb::BucketOptions {
            version: b.config.options.version,
            guarantee_order: b.config.options.guarantee_order,
        }),
        mtime: b.mtime.clone(),
        reindex_active: b
            .reindex_active
            .iter()
            .map(|(v, f)| (*v, pb::FieldList { fields: f.clone() }))
            .collect(),
    }
}

fn bucket_from_row(row: &tokio_postgres::Row) -> Result<Bucket, MorayError> {
    Bucket::from_row(
        row.try_get(0)?,
        row.try_get::<_, &str>(1)?,
        row.try_get::<_, Option<&str>>(2)?,
        row.try_get::<_, Option<&str>>(3)?,
        row.try_get(4)?,
    )
}

/// Runs DDL statements one by one (each error names its statement's object).
async fn run_ddl(conn: &mut PooledConn, bucket: &str, ddl: &[String]) -> Result<(), MorayError> {
    for statement in ddl {
        if let Err(e) = conn.client.batch_execute(statement).await {
            let e = MorayError::from(e);
            if let MorayError::Database { code, message, .. } = &e
                && code == "42P07"
            {
                return Err(MorayError::BucketConflict {
                    bucket: bucket.to_string(),
                    detail: format!(" (as a PostgreSQL relation: {message})"),
                });
            }
            return Err(e);
        }
    }
    Ok(())
}

impl Store {
    pub async fn create_bucket(&self, req: pb::CreateBucketRequest) -> Result<(), MorayError> {
        let options = req.options.as_ref();
        self.change_bucket(&req.name, req.config, options, async |conn, config| {
            self.create_in(conn, &req.name, config).await
        })
        .await
    }

    /// Checks bucket `name` and its new `config`, runs `change` with the config in one
    /// transaction, then forgets the bucket's cached config.
    async fn change_bucket(
        &self,
        name: &str,
        config: Option<pb::BucketConfig>,
        options: Option<&pb::RequestOptions>,
        change: impl AsyncFnOnce(&mut PooledConn, BucketConfig) -> Result<(), MorayError>,
    ) -> Result<(), MorayError> {
        validate_bucket_name(name)?;
        let config = config_from_proto(config)?;
        self.on_tx(options, async |conn| change(conn, config).await)
            .await?;
        self.cache.invalidate(name);
        Ok(())
    }

    async fn create_in(
        &self,
        conn: &mut PooledConn,
        name: &str,
        config: BucketConfig,
    ) -> Result<(), MorayError> {
        let probe = Bucket::new(
            name.to_string(),
            config.clone(),
            BTreeMap::new(),
            String::new(),
            String::new(),
        );
        let inserted = conn
            .client
            .query_one(
                "INSERT INTO buckets_config (name, index, pre, post, options, reindex_active, mtime) \
                 VALUES ($1::text, $2::text, '[]', '[]', $3::text, '{}', clock_timestamp()) RETURNING mtime::text",
                &[&name, &probe.index_json(), &probe.options_json()],
            )
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) => {
                return Err(match MorayError::from(e) {
                    MorayError::UniqueAttribute { .. } => MorayError::BucketConflict {
                        bucket: name.to_string(),
                        detail: String::new(),
                    },
                    e => e,
                });
            }
        }
        run_ddl(conn, name, &probe.create_ddl()).await
    }

    pub async fn update_bucket(&self, req: pb::UpdateBucketRequest) -> Result<(), MorayError> {
        let options = req.options.as_ref();
        self.change_bucket(&req.name, req.config, options, async |conn, config| {
            self.update_in_tx(conn, &req.name, config, req.no_reindex)
                .await
        })
        .await
    }

    async fn update_in_tx(
        &self,
        conn: &mut PooledConn,
        name: &str,
        config: BucketConfig,
        no_reindex: bool,
    ) -> Result<(), MorayError> {
        let old = locked_config(conn, name).await?;
        let stored = old.config.options.version;
        let requested = config.options.version;
        if stored != 0 && stored >= requested {
            return Err(MorayError::BucketVersion {
                bucket: name.to_string(),
                stored,
                requested,
            });
        }
        let d = diff(&old.config, &config);
        let rebuilt: Vec<String> = d.added.iter().chain(&d.modified).cloned().collect();
        let reindex = next_reindex_active(&old.reindex_active, &config, &rebuilt, no_reindex);
        let new = Bucket::new(
            name.to_string(),
            config.clone(),
            reindex,
            String::new(),
            String::new(),
        );
        conn.client
            .execute(
                "UPDATE buckets_config SET index = $2::text, options = $3::text, reindex_active = $4::text, \
                 mtime = clock_timestamp() WHERE name = $1::text",
                &[&name, &new.index_json(), &new.options_json(), &new.reindex_json()],
            )
            .await?;
        let mut ddl = Vec::new();
        for field in d.deleted.iter().chain(&d.modified) {
            ddl.push(format!(
                "ALTER TABLE {} DROP COLUMN IF EXISTS {}",
                new.table,
                quote_ident(&field.to_lowercase())
            ));
        }
        for field in &rebuilt {
            let Some(c) = new.columns.iter().find(|c| &c.field == field) else {
                continue;
            };
            ddl.push(format!(
                "ALTER TABLE {} ADD COLUMN {} {}{}",
                new.table,
                c.ident,
                c.ty.pg_column(),
                if c.unique { " UNIQUE" } else { "" }
            ));
            if !c.unique {
                ddl.push(new.index_ddl(c));
            }
        }
        if new.versioned() {
            ddl.push(new.rver_index_ddl());
        }
        if config.options.guarantee_order && !old.config.options.guarantee_order {
            let locking = quote_ident(&relation_name(name, "_locking_serial"));
            ddl.push(format!(
                "CREATE TABLE IF NOT EXISTS {locking} (id INTEGER PRIMARY KEY)"
            ));
            ddl.push(format!(
                "INSERT INTO {locking} (id) VALUES (1) ON CONFLICT (id) DO NOTHING"
            ));
        }
        run_ddl(conn, name, &ddl).await
    }

    pub async fn delete_bucket(&self, req: pb::DeleteBucketRequest) -> Result<(), MorayError> {
        let name = req.name.as_str();
        self.on_tx(req.options.as_ref(), async |conn| {
            let bucket = locked_config(conn, name).await?;
            conn.client
                .execute("DELETE FROM buckets_config WHERE name = $1::text", &[&name])
                .await?;
            run_ddl(conn, name, &bucket.drop_ddl()).await
        })
        .await?;
        self.cache.invalidate(name);
        Ok(())
    }

    pub async fn get_bucket(&self, req: pb::GetBucketRequest) -> Result<pb::Bucket, MorayError> {
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let b: Arc<Bucket> = self
            .with_conn(timeout, |mut conn| async move {
                let r = self.load_bucket(&mut conn, &req.name).await;
                (conn, r)
            })
            .await?;
        Ok(bucket_to_proto(&b))
    }

    pub async fn list_buckets(
        &self,
        req: pb::ListBucketsRequest,
    ) -> Result<Vec<pb::Bucket>, MorayError> {
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        self.with_conn(timeout, |conn| async move {
            let r = async {
                let rows = conn
                    .client
                    .query(&format!("{SELECT_CONFIG} ORDER BY name"), &[])
                    .await?;
                rows.iter()
                    .map(|row| bucket_from_row(row).map(|b| bucket_to_proto(&b)))
                    .collect()
            }
            .await;
            (conn, r)
        })
        .await
    }
}
