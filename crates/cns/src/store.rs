//! CNS's state in Moray: the live settings, each zone at its current serial, and each
//! zone's retained IXFR steps (model.rs names the buckets and keys). A commit writes a
//! zone and its new step in one batch, so after a restart [`Store::load_zones`] gives
//! exactly the zones served and the steps from older serials (IXFR keeps working).

use moray_client::filter::Filter;
use moray_client::typed::Bucket;
use moray_client::{
    BatchOp, BucketConfig, EtagCondition, FindOptions, IndexDef, MorayClient, Sort, SortOrder,
};

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::model::{StepRecord, ZoneRecord};
use crate::zone::{Change, Zone};

pub const CONFIG_BUCKET: &str = "cns_config";
pub const ZONES_BUCKET: &str = "cns_zones";
pub const STEPS_BUCKET: &str = "cns_changes";
/// The one key of the config bucket.
pub const CONFIG_KEY: &str = "config";

/// At most this many zones are read at start-up.
const MAX_ZONES: u64 = 10_000;
/// A batch of at most this many deletes at a time when steps are collected.
const MAX_BATCH: usize = 500;

/// A zone as stored, with its steps.
#[derive(Debug)]
pub struct StoredZone {
    pub zone: Zone,
    /// The steps that chain to the zone's serial, oldest first, with their commit
    /// times (ms since the epoch).
    pub steps: Vec<(Change, i64)>,
    /// The `from` serials of stored steps off that chain (left by an older CNS).
    pub orphans: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct Store {
    moray: MorayClient,
    config: Bucket<Settings>,
    zones: Bucket<ZoneRecord>,
    steps: Bucket<StepRecord>,
}

impl Store {
    pub fn new(moray: MorayClient) -> Store {
        Store {
            config: Bucket::new(moray.clone(), CONFIG_BUCKET, BucketConfig::versioned(1)),
            zones: Bucket::new(
                moray.clone(),
                ZONES_BUCKET,
                BucketConfig::versioned(1).with_index("zone", IndexDef::unique("string")),
            ),
            steps: Bucket::new(
                moray.clone(),
                STEPS_BUCKET,
                BucketConfig::versioned(1)
                    .with_index("zone", IndexDef::new("string"))
                    .with_index("from", IndexDef::new("number")),
            ),
            moray,
        }
    }

    pub async fn ensure(&self) -> Result<()> {
        for (name, r) in [
            (CONFIG_BUCKET, self.config.ensure().await),
            (ZONES_BUCKET, self.zones.ensure().await),
            (STEPS_BUCKET, self.steps.ensure().await),
        ] {
            r.map_err(Error::moray(format!("putBucket {name}")))?;
        }
        Ok(())
    }

    /// The live settings; on the first start, `initial` (validated) is stored and given.
    pub async fn load_or_seed_config(&self, initial: &Settings) -> Result<Settings> {
        if let Some(found) = self
            .config
            .get(CONFIG_KEY)
            .await
            .map_err(Error::moray("getObject cns_config"))?
        {
            return Ok(found.value);
        }
        let initial = initial.validated().map_err(Error::Invalid)?;
        match self.config.insert(CONFIG_KEY, &initial).await {
            Ok(_) => Ok(initial),
            // Another CNS seeded it meanwhile: use what it stored.
            Err(_) => Ok(self
                .config
                .fetch(CONFIG_KEY)
                .await
                .map_err(Error::moray("getObject cns_config"))?
                .value),
        }
    }

    pub async fn put_config(&self, settings: &Settings) -> Result<()> {
        self.config
            .put(CONFIG_KEY, settings, EtagCondition::Any)
            .await
            .map_err(Error::moray("putObject cns_config"))?;
        Ok(())
    }

    /// Every stored zone with its retained steps (oldest first; only the run that ends
    /// at the zone's serial) and the steps off that run (to be deleted).
    pub async fn load_zones(&self) -> Result<Vec<StoredZone>> {
        let stored = self
            .zones
            .find_values(&Filter::present("zone"), &FindOptions::limit(MAX_ZONES))
            .await
            .map_err(Error::moray("findObjects cns_zones"))?;
        let mut out = Vec::new();
        for record in stored {
            let zone = record.to_zone().map_err(Error::Corrupt)?;
            let options = FindOptions {
                no_limit: true,
                no_count: true,
                sort: vec![Sort {
                    attribute: "from".into(),
                    order: SortOrder::Asc,
                }],
                ..FindOptions::default()
            };
            let steps = self
                .steps
                .find_values(&Filter::eq("zone", &record.zone), &options)
                .await
                .map_err(Error::moray("findObjects cns_changes"))?;
            let mut changes = Vec::new();
            let mut at = std::collections::BTreeMap::new();
            for s in &steps {
                changes.push(s.to_change().map_err(Error::Corrupt)?);
                at.insert(s.from, s.at_ms);
            }
            let chain = chain_to(changes, record.serial);
            let orphans = steps
                .iter()
                .map(|s| s.from)
                .filter(|f| !chain.iter().any(|c| c.from == *f))
                .collect();
            let steps = chain
                .into_iter()
                .map(|c| {
                    let at_ms = at.get(&c.from).copied().unwrap_or_default();
                    (c, at_ms)
                })
                .collect();
            out.push(StoredZone {
                zone,
                steps,
                orphans,
            });
        }
        Ok(out)
    }

    /// Deletes `zone`'s steps from the serials `froms` (the journal's collection).
    pub async fn forget_steps(&self, zone: &str, froms: &[u32]) -> Result<()> {
        for chunk in froms.chunks(MAX_BATCH) {
            let ops: Vec<BatchOp> = chunk
                .iter()
                .map(|from| {
                    self.steps
                        .delete_op(&StepRecord::key(zone, *from), EtagCondition::Any)
                })
                .collect();
            self.moray
                .batch(&ops)
                .await
                .map_err(Error::moray("batch cns_changes"))?;
        }
        Ok(())
    }

    /// Writes `zone` and, when it is not the zone's first state, the step to it, and
    /// drops the steps from `forget` (serials no longer kept), in one batch.
    pub async fn commit(
        &self,
        zone: &Zone,
        step: Option<(&Change, i64)>,
        forget: &[u32],
    ) -> Result<()> {
        let record = ZoneRecord::of(zone);
        let mut ops: Vec<BatchOp> = Vec::new();
        ops.push(
            self.zones
                .put_op(&record.zone, &record, EtagCondition::Any)
                .map_err(Error::moray("encode cns_zones"))?,
        );
        if let Some((step, at_ms)) = step {
            let s = StepRecord::of(&record.zone, step, at_ms);
            ops.push(
                self.steps
                    .put_op(
                        &StepRecord::key(&record.zone, s.from),
                        &s,
                        EtagCondition::Any,
                    )
                    .map_err(Error::moray("encode cns_changes"))?,
            );
        }
        for from in forget {
            ops.push(
                self.steps
                    .delete_op(&StepRecord::key(&record.zone, *from), EtagCondition::Any),
            );
        }
        self.moray
            .batch(&ops)
            .await
            .map_err(Error::moray("batch cns_zones"))?;
        Ok(())
    }

    /// Forgets a zone no longer configured, and its steps.
    pub async fn remove_zone(&self, zone: &str, steps: &[u32]) -> Result<()> {
        let mut ops = vec![self.zones.delete_op(zone, EtagCondition::Any)];
        for from in steps {
            ops.push(
                self.steps
                    .delete_op(&StepRecord::key(zone, *from), EtagCondition::Any),
            );
        }
        self.moray
            .batch(&ops)
            .await
            .map_err(Error::moray("batch cns_zones"))?;
        Ok(())
    }
}

/// The steps, oldest first, that lead without a gap to `serial` (older ones, from before
/// a gap, cannot be used for IXFR).
pub fn chain_to(mut steps: Vec<Change>, serial: u32) -> Vec<Change> {
    steps.sort_by_key(|c| c.from);
    let mut out: Vec<Change> = Vec::new();
    let mut want = serial;
    while let Some(i) = steps.iter().position(|c| c.to == want) {
        let step = steps.remove(i);
        want = step.from;
        out.push(step);
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(from: u32, to: u32) -> Change {
        Change {
            from,
            to,
            removed: vec![],
            added: vec![],
        }
    }

    #[test]
    fn only_the_chain_ending_at_the_serial_is_kept() {
        let steps = vec![step(5, 6), step(1, 2), step(7, 8), step(6, 7)];
        let got: Vec<u32> = chain_to(steps, 8).iter().map(|c| c.from).collect();
        assert_eq!(got, vec![5, 6, 7]);
        assert!(chain_to(vec![step(1, 2)], 9).is_empty());
    }
}
