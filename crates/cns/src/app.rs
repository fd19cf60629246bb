//! CNS's logic: the zone builder (one loop turning what the followers hold into new
//! serials), the live settings, and what the admin API answers.
//!
//! Changes are gathered for [`Config::commit_window_ms`](crate::config::Config) (250 ms
//! by default) after the previous commit, and committed at once when CNS was idle
//! longer than that: each changed zone gets one new serial per window. A commit is
//! written to Moray (the zone and its IXFR step, one batch) before it is served.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use crate::build::{self, BuiltZone, Cmon};
use crate::config::Settings;
use crate::dns::TransferAcl;
use crate::error::{Error, Result};
use crate::follow::Shared;
use crate::journal::{Kept, Pass, Policy};
use crate::model;
use crate::peers::Peers;
use crate::store::Store;
use crate::zone::{Change, SoaFields, Zone, Zones};

/// A VM's names as GetVmNames gives them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmNames {
    pub names: Vec<String>,
    /// When CNS last computed its records (ms since the epoch); 0: never seen.
    pub last_visit_ms: i64,
}

#[derive(Debug, Default)]
struct Names {
    names: BTreeMap<String, Vec<String>>,
    known: BTreeSet<String>,
    at_ms: i64,
}

#[derive(Debug, Default)]
struct Journal {
    /// Per zone, the steps kept in Moray, oldest first.
    steps: BTreeMap<String, VecDeque<Kept>>,
    /// Invalid services tags already logged (vm -> reason).
    logged: BTreeMap<String, String>,
}

/// CNS: cheap to clone.
#[derive(Clone)]
pub struct Cns {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    zones: Arc<Zones>,
    shared: Arc<Shared>,
    settings: watch::Sender<Arc<Settings>>,
    acl: Arc<TransferAcl>,
    peers: Peers,
    cmon: Cmon,
    window: Duration,
    policy: Policy,
    names: RwLock<Names>,
    journal: Mutex<Journal>,
}

/// Every zone's peers (the transfer ACL's host names).
pub fn peer_names(settings: &Settings) -> Vec<String> {
    let mut peers: Vec<String> = settings
        .forward_zones
        .values()
        .flat_map(|z| z.peers.iter().cloned())
        .chain(settings.reverse_zones.peers.iter().cloned())
        .collect();
    peers.sort();
    peers.dedup();
    peers
}

/// Parts [`Cns::new`] takes.
pub struct Parts {
    pub store: Store,
    pub zones: Arc<Zones>,
    pub shared: Arc<Shared>,
    pub settings: Settings,
    pub acl: Arc<TransferAcl>,
    pub peers: Peers,
    pub cmon: Cmon,
    pub window: Duration,
    /// Which IXFR steps are kept (`journal.rs`).
    pub policy: Policy,
}

impl Cns {
    pub fn new(p: Parts) -> Cns {
        Cns {
            inner: Arc::new(Inner {
                store: p.store,
                zones: p.zones,
                shared: p.shared,
                settings: watch::channel(Arc::new(p.settings)).0,
                acl: p.acl,
                peers: p.peers,
                cmon: p.cmon,
                window: p.window,
                policy: p.policy,
                names: RwLock::new(Names::default()),
                journal: Mutex::new(Journal::default()),
            }),
        }
    }

    pub fn zones(&self) -> &Arc<Zones> {
        &self.inner.zones
    }

    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.inner.settings.borrow().clone()
    }

    /// Serves the zones and steps kept in Moray (start-up, before the followers).
    /// Steps stored off a zone's chain (an older CNS's) are deleted.
    pub async fn restore(&self) -> Result<()> {
        let stored = self.inner.store.load_zones().await?;
        let mut journal = self.inner.journal.lock().await;
        for s in stored {
            let name = model::text(&s.zone.origin);
            tracing::info!(zone = %name, serial = s.zone.serial, steps = s.steps.len(), "zone restored");
            if !s.orphans.is_empty() {
                self.inner.store.forget_steps(&name, &s.orphans).await?;
                tracing::info!(zone = %name, steps = s.orphans.len(), "steps off the zone's chain deleted");
            }
            journal.steps.insert(
                name,
                s.steps
                    .iter()
                    .map(|(c, at_ms)| Kept {
                        from: c.from,
                        at_ms: *at_ms,
                    })
                    .collect(),
            );
            self.inner
                .zones
                .restore(s.zone, s.steps.into_iter().map(|(c, _)| c).collect());
        }
        Ok(())
    }

    /// The journal's periodic pass every `every` until `shutdown` (the first one
    /// `every` after start).
    pub async fn collect_loop(self, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.collect().await {
                tracing::warn!(error = %triton_common::service::chain(&e), "IXFR journal not collected; trying again");
            }
        }
    }

    /// One full pass of the journal's collection (`journal.rs`): per zone, drops the
    /// steps beyond the newest `journal_keep` that no known secondary needs, and any
    /// beyond `journal_max` or `journal_keep_days`. Gives how many steps were dropped.
    pub async fn collect(&self) -> Result<usize> {
        let mut journal = self.inner.journal.lock().await;
        let peers = self.inner.peers.all();
        let now = triton_common::time::now_millis();
        let mut dropped = 0;
        for (zone, kept) in journal.steps.iter_mut() {
            let serials: Vec<u32> = peers
                .iter()
                .filter(|(ip, _)| !crate::dns::acl::is_local(**ip))
                .filter_map(|(_, p)| p.serials.get(zone).copied())
                .collect();
            let slice: Vec<Kept> = kept.iter().copied().collect();
            let n = self
                .inner
                .policy
                .drop_count(&slice, &serials, now, Pass::Full);
            if n == 0 {
                continue;
            }
            let froms: Vec<u32> = slice[..n].iter().map(|k| k.from).collect();
            self.inner.store.forget_steps(zone, &froms).await?;
            kept.drain(..n);
            let origin = model::name(zone).map_err(Error::Corrupt)?;
            self.inner.zones.forget_steps(&origin, &froms);
            tracing::info!(zone = %zone, steps = n, kept = kept.len(), "IXFR steps collected");
            dropped += n;
        }
        Ok(dropped)
    }

    /// Validates and stores `settings`, then rebuilds the zones under them.
    pub async fn update_config(&self, settings: Settings) -> Result<Settings> {
        let settings = settings.validated().map_err(Error::Invalid)?;
        self.inner.store.put_config(&settings).await?;
        if let Err(e) = self
            .inner
            .acl
            .set(&settings.allow_transfer, &peer_names(&settings))
        {
            // Validated above, so not expected; the ACL keeps its old entries.
            tracing::warn!(error = %e, "transfer ACL not changed");
        }
        self.inner.acl.resolve().await;
        self.inner.settings.send_replace(Arc::new(settings.clone()));
        self.inner.shared.changed.notify_one();
        Ok(settings)
    }

    /// The names of each of `uuids`.
    pub fn vm_names(&self, uuids: &[String]) -> Vec<(String, VmNames)> {
        let names = match self.inner.names.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        uuids
            .iter()
            .map(|u| {
                let key = u.to_ascii_lowercase();
                let found = VmNames {
                    names: names.names.get(&key).cloned().unwrap_or_default(),
                    last_visit_ms: if names.known.contains(&key) {
                        names.at_ms
                    } else {
                        0
                    },
                };
                (u.clone(), found)
            })
            .collect()
    }

    /// SuffixesForVm: the search suffixes of an instance of `owner` on `networks`.
    pub fn suffixes_for_vm(&self, owner: &str, networks: &[String]) -> Vec<String> {
        let settings = self.settings();
        let state = self.inner.shared.lock();
        let owner = state
            .inputs
            .owners
            .get(&owner.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| crate::names::Owner {
                uuid: owner.to_ascii_lowercase(),
                ..Default::default()
            });
        let known: BTreeMap<String, crate::names::Network> = state
            .inputs
            .networks
            .iter()
            .map(|(uuid, n)| {
                let mut n = n.clone();
                n.pools = state.inputs.pools.get(uuid).cloned().unwrap_or_default();
                (uuid.clone(), n)
            })
            .collect();
        let networks: Vec<String> = networks.iter().map(|n| n.to_ascii_lowercase()).collect();
        crate::names::suffixes_for_vm(&settings.rules(), &owner, &networks, &known)
    }

    /// Forgets a peer; `NotFound` when it was not known.
    pub fn delete_peer(&self, address: &str) -> Result<()> {
        let ip: IpAddr = address.parse().map_err(|_| {
            Error::Invalid(vec![crate::error::FieldError::invalid(
                "address",
                format!("must be an IP address (got {address:?})"),
            )])
        })?;
        if self.inner.peers.remove(crate::dns::acl::unmap(ip)) {
            Ok(())
        } else {
            Err(Error::NotFound(format!("peer {address} is not known")))
        }
    }

    /// The builder: rebuilds after every change the followers make, at most once per
    /// window, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let window = self.inner.window;
        let mut last = Instant::now()
            .checked_sub(window)
            .unwrap_or_else(Instant::now);
        let mut wake_at: Option<SystemTime> = None;
        loop {
            let wake = wake_at
                .and_then(|w| w.duration_since(SystemTime::now()).ok())
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.inner.shared.changed.notified() => {}
                _ = tokio::time::sleep(wake), if wake_at.is_some() => {}
            }
            let since = last.elapsed();
            if since < window {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(window - since) => {}
                }
            }
            match self.rebuild().await {
                Ok(w) => wake_at = w,
                Err(e) => {
                    tracing::warn!(error = %triton_common::service::chain(&e), "zones not committed; trying again");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    self.inner.shared.changed.notify_one();
                }
            }
            last = Instant::now();
        }
    }

    /// Builds every zone from what the followers hold and commits each changed one at
    /// a new serial. Nothing before every feed has given its snapshot. Gives when a
    /// rebuild is due without a change (a node's boot grace ending).
    pub async fn rebuild(&self) -> Result<Option<SystemTime>> {
        if !self.inner.shared.ready() {
            return Ok(None);
        }
        let mut journal = self.inner.journal.lock().await;
        let settings = self.settings();
        let now = SystemTime::now();
        let built = {
            let state = self.inner.shared.lock();
            let built = build::build(&settings, &self.inner.cmon, &state.inputs, now);
            let mut names = match self.inner.names.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            names.names = built.vm_names.clone();
            names.known = state.inputs.vms.keys().cloned().collect();
            names.at_ms = triton_common::time::now_millis();
            built
        };
        for (vm, reason) in &built.invalid_services {
            if journal.logged.get(vm) != Some(reason) {
                tracing::warn!(vm = %vm, %reason, "triton.cns.services tag ignored");
            }
        }
        journal.logged = built.invalid_services.clone();

        let current = self.inner.zones.snapshot();
        let mut wanted: BTreeMap<String, BuiltZone> = built.zones;
        for origin in current.zones.keys() {
            let name = model::text(origin);
            if wanted.contains_key(&name) {
                continue;
            }
            if name.ends_with(".arpa") {
                wanted.insert(name.clone(), build::empty_reverse(&settings, &name));
            } else {
                self.inner
                    .store
                    .remove_zone(
                        &name,
                        &journal
                            .steps
                            .remove(&name)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|k| k.from)
                            .collect::<Vec<_>>(),
                    )
                    .await?;
                self.inner.zones.remove(origin);
                tracing::info!(zone = %name, "zone no longer configured: removed");
            }
        }
        for (name, z) in wanted {
            let origin = model::name(&name).map_err(Error::Corrupt)?;
            let soa = SoaFields {
                mname: model::name(&z.mname).map_err(Error::Corrupt)?,
                rname: model::name(&z.rname).map_err(Error::Corrupt)?,
            };
            let mut records = Vec::with_capacity(z.records.len());
            for (owner, data) in &z.records {
                match model::to_record(owner, data) {
                    Ok(r) => records.push(r),
                    Err(e) => tracing::warn!(zone = %name, error = %e, "record left out"),
                }
            }
            let old = current.zones.get(&origin);
            let draft = Zone::new(origin.clone(), old.map_or(0, |o| o.serial), soa.clone())
                .with_records(records);
            if let Some(old) = old
                && old.soa == soa
                && Change::between(old, &draft).is_empty()
            {
                continue;
            }
            let serial = build::next_serial(old.map(|o| o.serial), now);
            let mut zone = draft;
            zone.serial = serial;
            let step = old.map(|o| Change::between(o, &zone));
            let at_ms = triton_common::time::now_millis();
            let kept = journal.steps.entry(name.clone()).or_default();
            if let Some(step) = &step {
                kept.push_back(Kept {
                    from: step.from,
                    at_ms,
                });
            }
            let slice: Vec<Kept> = kept.iter().copied().collect();
            let n = self
                .inner
                .policy
                .drop_count(&slice, &[], at_ms, Pass::Commit);
            let forget: Vec<u32> = slice[..n].iter().map(|k| k.from).collect();
            if let Err(e) = self
                .inner
                .store
                .commit(&zone, step.as_ref().map(|s| (s, at_ms)), &forget)
                .await
            {
                // Not served: the next rebuild tries again from the served state.
                if step.is_some() {
                    kept.pop_back();
                }
                return Err(e);
            }
            kept.drain(..n);
            let records = zone.iter().count();
            if let Err(e) = self.inner.zones.commit(zone) {
                tracing::warn!(error = %e, "commit refused");
                continue;
            }
            self.inner.zones.forget_steps(&origin, &forget);
            tracing::info!(zone = %name, serial, records, "zone committed");
        }
        Ok(built.wake_at)
    }
}
