//! batch: puts, deletes, updates and deleteManys in one transaction.

use serde_json::{Map, Value};
use triton_proto::moray::v1 as pb;

use crate::error::MorayError;
use crate::pool::PooledConn;
use crate::store::{Store, begin, finish};

use super::find::FindOpts;
use super::{Put, etag_condition};

impl Store {
    /// Puts, deletes, updates and deleteManys in one transaction, in order; the first error
    /// rolls everything back (A6.6).
    pub async fn batch(&self, req: pb::BatchRequest) -> Result<pb::BatchResponse, MorayError> {
        use pb::batch_operation::Operation;
        // Check every value before touching the database.
        let mut values = Vec::with_capacity(req.requests.len());
        for (i, op) in req.requests.iter().enumerate() {
            match &op.operation {
                Some(Operation::Put(p)) => {
                    values.push(Some(
                        self.parse_value(&format!("requests[{i}].value"), &p.value)?,
                    ));
                }
                Some(_) => values.push(None),
                None => {
                    return Err(MorayError::invalid_argument(
                        format!("requests[{i}]"),
                        "names no operation (put, delete, update or delete_many)",
                    ));
                }
            }
        }
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let requests = req.requests;
        let results = self
            .with_conn(timeout, |mut conn| async move {
                // A unique violation is tried once more, as for a lone put
                // (`put_alone`): it may be a race between two creators of one key.
                let r = async {
                    let mut retried = false;
                    loop {
                        begin(&mut conn, "BEGIN").await?;
                        let r = self
                            .batch_in(&mut conn, requests.clone(), values.clone())
                            .await;
                        match finish(&mut conn, r).await {
                            Err(MorayError::UniqueAttribute { .. }) if !retried => retried = true,
                            r => break r,
                        }
                    }
                }
                .await;
                (conn, r)
            })
            .await?;
        self.feed.wrote();
        Ok(pb::BatchResponse { etags: results })
    }

    async fn batch_in(
        &self,
        conn: &mut PooledConn,
        requests: Vec<pb::BatchOperation>,
        values: Vec<Option<Map<String, Value>>>,
    ) -> Result<Vec<pb::BatchResult>, MorayError> {
        use pb::batch_operation::Operation;
        let mut results = Vec::with_capacity(requests.len());
        for (op, value) in requests.into_iter().zip(values) {
            let result = match op.operation {
                Some(Operation::Put(mut p)) => {
                    let value = value.unwrap_or_default();
                    let etag = etag_condition(p.etag.take());
                    let put = Put {
                        bucket: &p.bucket,
                        key: &p.key,
                        raw: &p.value,
                        value: &value,
                        etag: &etag,
                    };
                    let etag = self.put_in(conn, put).await?;
                    pb::BatchResult {
                        bucket: p.bucket,
                        key: p.key,
                        etag,
                        ..Default::default()
                    }
                }
                Some(Operation::Delete(d)) => {
                    self.delete_in(conn, &d.bucket, &d.key, &etag_condition(d.etag))
                        .await?;
                    pb::BatchResult {
                        bucket: d.bucket,
                        key: d.key,
                        ..Default::default()
                    }
                }
                Some(Operation::Update(u)) => {
                    let opts = FindOpts::from(u.find);
                    let (count, etag) = self
                        .update_in(conn, &u.bucket, &u.fields, &u.filter, &opts)
                        .await?;
                    pb::BatchResult {
                        bucket: u.bucket,
                        filter: u.filter,
                        etag,
                        count,
                        ..Default::default()
                    }
                }
                Some(Operation::DeleteMany(d)) => {
                    let opts = FindOpts::from(d.find);
                    let count = self
                        .delete_many_in(conn, &d.bucket, &d.filter, &opts)
                        .await?;
                    pb::BatchResult {
                        bucket: d.bucket,
                        filter: d.filter,
                        count,
                        ..Default::default()
                    }
                }
                None => continue,
            };
            results.push(result);
        }
        Ok(results)
    }
}
