//! The operator RPCs: `Sql` (one statement with positional values, rows as JSON; spec
//! A6.10) and `Ping`.

use serde_json::{Map, Value};
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};
use triton_proto::moray::v1 as pb;

use crate::decode::Json;
use crate::error::MorayError;
use crate::store::{Store, begin, finish, json_kind};

/// A positional value sent as text, whatever the parameter's type: PostgreSQL parses it
/// with the type's input function, as it does for node-postgres.
#[derive(Debug)]
struct TextParam(Option<String>);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

fn params(values: &str) -> Result<Vec<TextParam>, MorayError> {
    if values.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parsed: Value = serde_json::from_str(values)
        .map_err(|e| MorayError::invalid_argument("values", format!("is not valid JSON: {e}")))?;
    let Value::Array(items) = parsed else {
        return Err(MorayError::invalid_argument(
            "values",
            format!("must be a JSON array, not {}", json_kind(&parsed)),
        ));
    };
    Ok(items
        .into_iter()
        .map(|v| {
            TextParam(match v {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            })
        })
        .collect())
}

/// `DISCARD ALL` on a connection outside a transaction; the pool's statement cache goes too.
async fn reset_session(conn: &mut crate::pool::PooledConn) -> Result<(), MorayError> {
    conn.forget_statements();
    conn.client.batch_execute("DISCARD ALL").await?;
    Ok(())
}

impl Store {
    /// Runs one statement in a transaction and sends each row, as a JSON object, to `tx`.
    pub async fn sql(
        &self,
        req: pb::SqlRequest,
        tx: &tokio::sync::mpsc::Sender<Result<pb::SqlRow, tonic::Status>>,
    ) -> Result<(), MorayError> {
        if !self.config.sql_enabled {
            return Err(MorayError::Invocation(
                "Sql is switched off on this Moray (sql_enabled = false)".into(),
            ));
        }
        let params = params(&req.values)?;
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let statement = req.statement;
        let begin_statement = if self.config.sql_allow_writes {
            "BEGIN"
        } else {
            "BEGIN READ ONLY"
        };
        // A write in the read-only transaction is the caller's mistake, not a read-only
        // primary (which is what SQLSTATE 25006 means elsewhere in Moray).
        let read_only = !self.config.sql_allow_writes;
        let refused = move |e: tokio_postgres::Error| match e.as_db_error() {
            Some(db)
                if read_only
                    && *db.code() == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION =>
            {
                MorayError::Invocation(format!(
                    "{} (Sql is read-only on this Moray: sql_allow_writes = false)",
                    db.message()
                ))
            }
            _ => MorayError::from(e),
        };
        self.with_conn(timeout, |mut conn| async move {
            // Each Sql starts from a reset session and leaves one behind: nothing it SETs
            // (search_path, role, ...) reaches the next request on this pooled connection.
            // DISCARD ALL also drops the connection's prepared statements.
            if let Err(e) = reset_session(&mut conn).await {
                return (conn, Err(e));
            }
            let r = async {
                begin(&mut conn, begin_statement).await?;
                let r = async {
                    use futures::TryStreamExt;
                    let stmt = conn.client.prepare(&statement).await.map_err(refused)?;
                    let rows = conn
                        .client
                        .query_raw(&stmt, params.iter().map(|p| p as &dyn ToSql))
                        .await
                        .map_err(refused)?;
                    let mut rows = std::pin::pin!(rows);
                    while let Some(row) = rows.try_next().await.map_err(refused)? {
                        let mut object = Map::new();
                        for (i, column) in row.columns().iter().enumerate() {
                            let v = row.try_get::<_, Option<Json>>(i).map_err(|_| {
                                MorayError::invalid_argument(
                                    "statement",
                                    format!(
                                        "column {} has type {}, which Sql cannot return; cast it to text",
                                        column.name(),
                                        column.type_()
                                    ),
                                )
                            })?;
                            object.insert(column.name().to_string(), v.map_or(Value::Null, |j| j.0));
                        }
                        let row = pb::SqlRow {
                            row: Value::Object(object).to_string(),
                        };
                        if tx.send(Ok(row)).await.is_err() {
                            break;
                        }
                    }
                    Ok::<_, MorayError>(())
                }
                .await;
                finish(&mut conn, r).await
            }
            .await;
            let reset = reset_session(&mut conn).await;
            (conn, r.and(reset))
        })
        .await
    }

    /// With `deep`, touches PostgreSQL.
    pub async fn ping(&self, req: pb::PingRequest) -> Result<(), MorayError> {
        if !req.deep {
            return Ok(());
        }
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        self.with_conn(timeout, |conn| async move {
            let r = conn
                .client
                .query("SELECT name FROM buckets_config LIMIT 1", &[])
                .await
                .map(|_| ())
                .map_err(MorayError::from);
            (conn, r)
        })
        .await
    }
}
