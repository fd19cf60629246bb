//! NICs: provisioning (MAC and IP), reads, updates and deletes.

use std::collections::HashMap;

use moray_client::typed::RetryPolicy;
use moray_client::{EtagCondition, FindOptions};
use triton_proto::napi::v1 as proto;

use crate::error::{Error, FieldError, Result, StoreError};
use crate::ip;
use crate::mac;
use crate::model::{IpRecord, Network, NetworkPool, Nic, Provisionable};
use crate::store::{self, Conflict, IPS, NETWORK_POOLS, NETWORKS, NICS, Store, Stored};
use crate::validate::{self, Checks};
use moray_client::filter::Filter;

use super::{IP_PROVISION, Mapping, Napi, gave_up, not_found, paged};

impl Napi {
    #[tracing::instrument(skip_all, fields(network_uuid = req.network_uuid.as_deref().unwrap_or(""), owner_uuid = %req.owner_uuid, belongs_to_uuid = %req.belongs_to_uuid))]
    pub async fn create_nic(&self, req: proto::CreateNicRequest) -> Result<(Nic, Option<Network>)> {
        let mut c = Checks::new();
        let plan = self.plan(&req, &mut c, &mut Lookups::default()).await?;
        c.finish()?;
        let Some(plan) = plan else {
            return Err(Error::invalid("nic", "invalid"));
        };
        let Some(pool) = plan.pool else {
            let one = Provision {
                nic: plan.nic,
                network: plan.targets.into_iter().next_back(),
                requested_ip: plan.requested_ip,
                given_mac: plan.given_mac,
            };
            return self.provision(vec![one], false).await.map(one_of);
        };
        for network in plan.targets {
            let one = Provision {
                nic: plan.nic.clone(),
                network: Some(network),
                requested_ip: None,
                given_mac: plan.given_mac,
            };
            match self.provision(vec![one], false).await {
                Err(Error::SubnetFull { what }) => {
                    tracing::debug!(pool = %pool.uuid, %what, "pool network full; trying the next");
                }
                other => return other.map(one_of),
            }
        }
        Err(Error::SubnetFull {
            what: format!("network pool {} (all its networks are full)", pool.uuid),
        })
    }

    /// Many NICs in one transaction: each entry checked as [`Napi::create_nic`] checks
    /// it (its errors named `nics[i].<field>`), then every address allocated and every
    /// NIC and IP record written in one Moray batch. All or nothing: any bad entry, a
    /// taken MAC or IP, or a network without enough free addresses fails the whole call
    /// and writes nothing. A network pool and `primary` are refused (CreateNic takes
    /// them: a pool tries its networks one after the other, `primary` rewrites the
    /// owner's other NICs).
    #[tracing::instrument(skip_all, fields(nics = reqs.len()))]
    pub async fn create_nics(
        &self,
        reqs: Vec<proto::CreateNicRequest>,
    ) -> Result<Vec<(Nic, Option<Network>)>> {
        if reqs.is_empty() {
            return Err(Error::InvalidParameters(vec![FieldError::missing("nics")]));
        }
        if reqs.len() > MAX_CREATE_NICS {
            return Err(Error::invalid(
                "nics",
                format!(
                    "at most {MAX_CREATE_NICS} NICs in one call ({} given)",
                    reqs.len()
                ),
            ));
        }
        let mut lookups = Lookups::default();
        let mut errors = Vec::new();
        let mut all = Vec::with_capacity(reqs.len());
        // Within the batch, a MAC or an address asked for twice: entry numbers.
        let mut macs: HashMap<u64, usize> = HashMap::new();
        let mut ips: HashMap<(String, u32), usize> = HashMap::new();
        for (i, req) in reqs.iter().enumerate() {
            let mut c = Checks::new();
            if req.primary {
                c.push(FieldError::invalid(
                    "primary",
                    "not taken by CreateNics (it changes the owner's other NICs): use CreateNic",
                ));
            }
            let plan = self.plan(req, &mut c, &mut lookups).await?;
            if let Some(plan) = plan {
                if plan.pool.is_some() {
                    c.push(FieldError::invalid(
                        "network_uuid",
                        "a network pool is not taken by CreateNics: use CreateNic",
                    ));
                }
                if let Some(m) = plan.given_mac
                    && let Some(first) = macs.insert(m, i)
                {
                    c.push(FieldError::duplicate(
                        "mac",
                        format!("MAC {} is also nics[{first}]'s", mac::format(m)),
                    ));
                }
                if let (Some(ip), Some(net)) = (plan.requested_ip, plan.targets.first())
                    && let Some(first) = ips.insert((net.uuid.clone(), ip), i)
                {
                    c.push(FieldError::duplicate(
                        "ip",
                        format!("ip {} is also nics[{first}]'s", ip::format_ip(ip)),
                    ));
                }
                all.push(Provision {
                    nic: plan.nic,
                    network: plan.targets.into_iter().next(),
                    requested_ip: plan.requested_ip,
                    given_mac: plan.given_mac,
                });
            }
            errors.extend(c.into_errors(&format!("nics[{i}].")));
        }
        if !errors.is_empty() {
            return Err(Error::InvalidParameters(errors));
        }
        self.provision(all, true).await
    }

    /// Checks one CreateNic request; every bad field goes to `c` (`None`: nothing to
    /// provision). What it reads from Moray (nic tags, networks, pools) is kept in
    /// `lookups` for the next entry of a batch.
    async fn plan(
        &self,
        req: &proto::CreateNicRequest,
        c: &mut Checks,
        lookups: &mut Lookups,
    ) -> Result<Option<Plan>> {
        let given_mac = match &req.mac {
            Some(m) => c.take(mac::parse(m).map_err(|e| FieldError::invalid("mac", e))),
            None => None,
        };
        let owner_uuid = c.take(validate::uuid("owner_uuid", &req.owner_uuid));
        let belongs_to_uuid = c.take(validate::uuid("belongs_to_uuid", &req.belongs_to_uuid));
        let belongs_to_type = c.take(validate::one_of(
            "belongs_to_type",
            &req.belongs_to_type,
            validate::BELONGS_TO_TYPES,
        ));
        let state = c.take(validate::one_of(
            "state",
            req.state.as_deref().unwrap_or("running"),
            validate::NIC_STATES,
        ));
        let cn_uuid = match &req.cn_uuid {
            Some(u) if !u.is_empty() => c.take(validate::uuid("cn_uuid", u)),
            _ => None,
        };
        let vlan_id = match req.vlan_id {
            Some(v) => c.take(validate::vlan_id("vlan_id", v)),
            None => Some(0),
        };
        let tags_provided = self
            .nic_tags_provided(c, &req.nic_tags_provided, lookups)
            .await?;
        // The networks to try, in order: one, or a pool's.
        let mut targets: Vec<Network> = Vec::new();
        let mut pool: Option<NetworkPool> = None;
        let mut requested_ip = None;
        match &req.network_uuid {
            Some(nu) => {
                if let Some(nu) = c.take(validate::uuid("network_uuid", nu)) {
                    if let Some(n) = lookups.network(&self.store, &nu).await? {
                        let allowed = |o: &str| n.provisionable_by(o, &self.admin_uuid);
                        owner_may_use(c, owner_uuid.as_deref(), allowed, "network", &n.uuid);
                        if let Some(ip) = &req.ip {
                            // The operator's own NICs may take any address of the
                            // subnet; everyone else's stay in the provision range.
                            let whole_subnet = owner_uuid.as_deref() == Some(&self.admin_uuid);
                            requested_ip = c.take(validate::nic_ip(
                                "ip",
                                ip,
                                &n.parsed_subnet()?,
                                n.gateway_ip()?,
                                n.range()?,
                                whole_subnet,
                            ));
                        }
                        targets.push(n);
                    } else if let Some(p) = lookups.pool(&self.store, &nu).await? {
                        let allowed = |o: &str| p.provisionable_by(o, &self.admin_uuid);
                        owner_may_use(c, owner_uuid.as_deref(), allowed, "network pool", &p.uuid);
                        if req.ip.is_some() {
                            c.push(FieldError::invalid(
                                "ip",
                                "IP cannot be specified with a network pool",
                            ));
                        }
                        for u in &p.networks {
                            if let Some(n) = lookups.network(&self.store, u).await?
                                && owner_uuid
                                    .as_ref()
                                    .is_none_or(|o| n.provisionable_by(o, &self.admin_uuid))
                            {
                                targets.push(n);
                            }
                        }
                        pool = Some(p);
                    } else {
                        c.push(FieldError::invalid(
                            "network_uuid",
                            format!("network {nu} does not exist"),
                        ));
                    }
                }
                if req.nic_tag.is_some() {
                    c.push(FieldError::invalid(
                        "nic_tag",
                        "cannot be given with network_uuid (the network's is used)",
                    ));
                }
            }
            None => {
                if req.ip.is_some() {
                    c.push(FieldError::invalid("ip", "requires network_uuid"));
                }
                if let Some(tag) = &req.nic_tag
                    && let Some(tag) = c.take(validate::nic_tag_name("nic_tag", tag))
                    && !lookups.tag_exists(self, &tag).await?
                {
                    c.push(FieldError::invalid(
                        "nic_tag",
                        format!("nic tag {tag:?} does not exist"),
                    ));
                }
            }
        }
        let (
            Some(owner_uuid),
            Some(belongs_to_uuid),
            Some(belongs_to_type),
            Some(state),
            Some(vlan_id),
        ) = (owner_uuid, belongs_to_uuid, belongs_to_type, state, vlan_id)
        else {
            return Ok(None);
        };
        let now = triton_common::time::now_rfc3339();
        let nic = Nic {
            mac: given_mac.map(mac::format).unwrap_or_default(),
            owner_uuid,
            belongs_to_uuid,
            belongs_to_type,
            primary: req.primary,
            state,
            cn_uuid,
            model: req.model.clone().filter(|m| !m.is_empty()),
            network_uuid: None,
            ip: None,
            nic_tag: req.nic_tag.clone(),
            vlan_id,
            nic_tags_provided: tags_provided,
            allow_dhcp_spoofing: req.allow_dhcp_spoofing,
            allow_ip_spoofing: req.allow_ip_spoofing,
            allow_mac_spoofing: req.allow_mac_spoofing,
            allow_restricted_traffic: req.allow_restricted_traffic,
            allow_unfiltered_promisc: req.allow_unfiltered_promisc,
            underlay: req.underlay,
            created_timestamp: now.clone(),
            modified_timestamp: now,
        };
        Ok(Some(Plan {
            nic,
            targets,
            pool,
            requested_ip,
            given_mac,
        }))
    }

    /// Writes every NIC of `all` (and, on a network, its IP: the one asked for or a free
    /// one) in one batch, retrying lost races; all are written or none. `batch`: the
    /// NICs are a CreateNics call's, and an error names the entry (`nics[i].mac`).
    async fn provision(
        &self,
        mut all: Vec<Provision>,
        batch: bool,
    ) -> Result<Vec<(Nic, Option<Network>)>> {
        let field = |i: usize, name: &str| {
            if batch {
                format!("nics[{i}].{name}")
            } else {
                name.to_string()
            }
        };
        for p in &mut all {
            if let Some(n) = &p.network {
                p.nic.network_uuid = Some(n.uuid.clone());
                p.nic.nic_tag = Some(n.nic_tag.clone());
                p.nic.vlan_id = n.vlan_id;
            }
        }
        let mut tries = IP_PROVISION.start();
        while tries.next().await {
            let attempt = tries.attempt();
            // Addresses from the networks' cursors, to give back or mark written.
            let mut from_cursor: Vec<(String, u32)> = Vec::new();
            let began = std::time::Instant::now();
            let ops = self.provision_ops(&mut all, &mut from_cursor).await;
            let ops_took = began.elapsed();
            let ops = match ops {
                Ok(ops) => ops,
                Err(e) => {
                    for (net, ip) in from_cursor.iter().rev() {
                        self.cursor(net).lock().await.give_back(*ip);
                    }
                    return Err(e);
                }
            };
            let written = self.store.batch(&ops).await;
            // Where a provision's time goes: choosing addresses (a scan now and then)
            // and building the writes, then Moray's one transaction for all of them.
            tracing::debug!(
                nics = all.len(),
                attempt,
                ops_ms = ops_took.as_secs_f64() * 1e3,
                batch_ms = (began.elapsed() - ops_took).as_secs_f64() * 1e3,
                ok = written.is_ok(),
                "provision timings"
            );
            let taken_ip = match &written {
                Err(e) => match store::conflict(e) {
                    Some(Conflict::Etag { bucket, key }) if bucket == IPS => Some(key),
                    _ => None,
                },
                Ok(()) => None,
            };
            for (net, ip) in from_cursor.iter().rev() {
                let cursor = self.cursor(net);
                let mut c = cursor.lock().await;
                if written.is_ok() {
                    c.written(*ip);
                } else if taken_ip.as_deref() == Some(IpRecord::key(net, *ip).as_str()) {
                    // Taken by someone else: this scan is out of date.
                    c.invalidate(Some(*ip));
                } else {
                    c.give_back(*ip);
                }
            }
            let Err(e) = written else {
                for p in &all {
                    tracing::info!(mac = %p.nic.mac, ip = ?p.nic.ip, attempt, "NIC provisioned");
                }
                return Ok(all.into_iter().map(|p| (p.nic, p.network)).collect());
            };
            let mac_taken = |i: usize, p: &Provision| {
                Error::InvalidParameters(vec![FieldError::duplicate(
                    field(i, "mac"),
                    format!("a NIC with MAC {} already exists", p.nic.mac),
                )])
            };
            match store::conflict(&e) {
                Some(Conflict::Etag { bucket, key }) if bucket == NICS => {
                    if let Some((i, p)) = all
                        .iter()
                        .enumerate()
                        .find(|(_, p)| p.given_mac.is_some() && p.nic.mac == key)
                    {
                        return Err(mac_taken(i, p));
                    }
                }
                Some(Conflict::Unique { attribute }) if attribute == "mac" => {
                    // The index does not say whose: a given MAC that exists now is.
                    for (i, p) in all.iter().enumerate() {
                        if p.given_mac.is_some()
                            && self.store.get::<Nic>(NICS, &p.nic.mac).await?.is_some()
                        {
                            return Err(mac_taken(i, p));
                        }
                    }
                }
                Some(Conflict::Etag { bucket, key }) if bucket == IPS => {
                    // Never who holds it (another tenant's VM, its owner, a
                    // reservation): the caller may be anyone.
                    if let Some((i, p)) = all.iter().enumerate().find(|(_, p)| {
                        let net = p.network.as_ref().map(|n| n.uuid.as_str());
                        p.requested_ip.zip(net).map(|(ip, n)| IpRecord::key(n, ip))
                            == Some(key.clone())
                    }) {
                        let ip = p.nic.ip.clone().unwrap_or_default();
                        return Err(Error::InvalidParameters(vec![FieldError::used_by(
                            field(i, "ip"),
                            format!("ip {ip} is already in use"),
                        )]));
                    }
                }
                Some(_) => {}
                None => return Err(Error::moray("batch provision NIC")(e)),
            }
            tracing::debug!(attempt, nics = all.len(), "provision conflict; retrying");
        }
        let what = match all.as_slice() {
            [one] => format!(
                "provision a NIC on network {}",
                one.network
                    .as_ref()
                    .map(|n| n.uuid.as_str())
                    .unwrap_or_default()
            ),
            many => format!("provision {} NICs", many.len()),
        };
        Err(Error::Contention {
            what,
            attempts: IP_PROVISION.attempts,
        })
    }

    /// One attempt's writes for `all`: a MAC for each (the given one or a new random
    /// one), an address from the network's cursor (noted in `from_cursor`) unless one
    /// was asked for, the IP and NIC records, Portolan's rows, and for a `primary` NIC
    /// the owner's other NICs made not primary.
    async fn provision_ops(
        &self,
        all: &mut [Provision],
        from_cursor: &mut Vec<(String, u32)>,
    ) -> Result<Vec<moray_client::BatchOp>> {
        let mut ops = Vec::with_capacity(all.len() * 2);
        for p in all.iter_mut() {
            let nic = &mut p.nic;
            nic.mac = mac::format(p.given_mac.unwrap_or_else(|| mac::random(self.oui)));
            if let Some(net) = &p.network {
                let ip_num = match p.requested_ip {
                    Some(ip) => ip,
                    None => {
                        let ip = self.next_free(net).await?;
                        from_cursor.push((net.uuid.clone(), ip));
                        ip
                    }
                };
                let record = IpRecord {
                    belongs_to_uuid: Some(nic.belongs_to_uuid.clone()),
                    belongs_to_type: Some(nic.belongs_to_type.clone()),
                    owner_uuid: Some(nic.owner_uuid.clone()),
                    mac: Some(nic.mac.clone()),
                    ..IpRecord::free(&net.uuid, ip_num)
                };
                nic.ip = Some(record.ip.clone());
                ops.push(store::put_op(
                    IPS,
                    &IpRecord::key(&net.uuid, ip_num),
                    &record,
                    EtagCondition::MustNotExist,
                )?);
            }
            ops.push(store::put_op(
                NICS,
                &nic.mac,
                &*nic,
                EtagCondition::MustNotExist,
            )?);
            if nic.primary {
                ops.extend(
                    self.clear_primary_ops(&nic.belongs_to_uuid, &nic.mac)
                        .await?,
                );
            }
            // Portolan's rows for a fabric or underlay NIC, in the same batch.
            let mapping = Mapping::of(nic, p.network.as_ref())?;
            ops.extend(self.portolan_ops(None, mapping.as_ref()).await?);
        }
        Ok(ops)
    }

    /// Puts that clear `primary` on the other NICs of `belongs_to_uuid`.
    async fn clear_primary_ops(
        &self,
        belongs_to_uuid: &str,
        except_mac: &str,
    ) -> Result<Vec<moray_client::BatchOp>> {
        // By owner only, `primary` checked here: with `(primary=true)` in the filter
        // PostgreSQL may walk the `primary` index, every primary NIC of every VM.
        let others = self
            .store
            .find_all::<Nic>(
                NICS,
                &Filter::eq("belongs_to_uuid", belongs_to_uuid).to_string(),
                "mac",
            )
            .await?;
        let now = triton_common::time::now_rfc3339();
        others
            .into_iter()
            .filter(|s| s.value.primary && s.value.mac != except_mac)
            .map(|s| {
                let mut n = s.value;
                n.primary = false;
                n.modified_timestamp = now.clone();
                store::put_op(NICS, &n.mac.clone(), &n, EtagCondition::Is(s.etag))
            })
            .collect()
    }

    async fn nic(&self, mac_text: &str) -> Result<Stored<Nic>> {
        let m = mac::parse(mac_text).map_err(|e| Error::invalid("mac", e))?;
        let key = mac::format(m);
        self.store
            .get::<Nic>(NICS, &key)
            .await?
            .ok_or_else(|| not_found("nic", key))
    }

    /// The NIC with its network (for the wire form's netmask, gateway, ...).
    pub(crate) async fn with_network(&self, nic: Nic) -> Result<(Nic, Option<Network>)> {
        let network = match &nic.network_uuid {
            Some(u) => self
                .store
                .get::<Network>(NETWORKS, u)
                .await?
                .map(|s| s.value),
            None => None,
        };
        Ok((nic, network))
    }

    pub async fn get_nic(&self, mac_text: &str) -> Result<(Nic, Option<Network>)> {
        let nic = self.nic(mac_text).await?.value;
        self.with_network(nic).await
    }

    pub async fn list_nics(
        &self,
        req: proto::ListNicsRequest,
    ) -> Result<Vec<(Nic, Option<Network>)>> {
        let mut c = Checks::new();
        let limit = c.take(validate::limit("limit", req.limit));
        let mut terms = Vec::new();
        for (field, value) in [
            ("belongs_to_uuid", &req.belongs_to_uuid),
            ("owner_uuid", &req.owner_uuid),
            ("network_uuid", &req.network_uuid),
            ("cn_uuid", &req.cn_uuid),
        ] {
            if let Some(v) = value
                && let Some(v) = c.take(validate::uuid(field, v))
            {
                terms.push(Filter::eq(field, v));
            }
        }
        if let Some(t) = &req.belongs_to_type
            && let Some(t) = c.take(validate::one_of(
                "belongs_to_type",
                t,
                validate::BELONGS_TO_TYPES,
            ))
        {
            terms.push(Filter::eq("belongs_to_type", t));
        }
        if let Some(s) = &req.state
            && let Some(s) = c.take(validate::one_of("state", s, validate::NIC_STATES))
        {
            terms.push(Filter::eq("state", s));
        }
        if let Some(t) = &req.nic_tag {
            terms.push(Filter::eq("nic_tag", t));
        }
        c.finish()?;
        let limit = limit.unwrap_or(validate::MAX_LIMIT);
        let filter = Filter::and_else(terms, Filter::present("mac")).to_string();
        let found = if req.belongs_to_uuid.is_some() {
            // One instance's NICs are few: read them all by the owner's index and page
            // here. Sorted and limited in Moray, PostgreSQL may instead walk the `mac`
            // index through every NIC of the datacenter.
            let mut all = self
                .store
                .find::<Nic>(
                    NICS,
                    &filter,
                    &FindOptions {
                        no_limit: true,
                        no_count: true,
                        ..Default::default()
                    },
                )
                .await?;
            all.sort_by(|a, b| a.value.mac.cmp(&b.value.mac));
            all.into_iter()
                .skip(req.offset as usize)
                .take(limit as usize)
                .collect()
        } else {
            self.store
                .find::<Nic>(NICS, &filter, &paged(limit, req.offset, "mac"))
                .await?
        };
        let mut networks: std::collections::HashMap<String, Option<Network>> = Default::default();
        let mut out = Vec::with_capacity(found.len());
        for s in found {
            let nic = s.value;
            let network = match &nic.network_uuid {
                Some(u) => {
                    if !networks.contains_key(u) {
                        let n = self
                            .store
                            .get::<Network>(NETWORKS, u)
                            .await?
                            .map(|s| s.value);
                        networks.insert(u.clone(), n);
                    }
                    networks.get(u).cloned().flatten()
                }
                None => None,
            };
            out.push((nic, network));
        }
        Ok(out)
    }

    pub async fn update_nic(&self, req: proto::UpdateNicRequest) -> Result<(Nic, Option<Network>)> {
        let mut tries = RetryPolicy::DEFAULT.start();
        while tries.next().await {
            let stored = self.nic(&req.mac).await?;
            let before = stored.value.clone();
            let mut nic = stored.value;
            let mut c = Checks::new();
            if let Some(s) = &req.state
                && let Some(s) = c.take(validate::one_of("state", s, validate::NIC_STATES))
            {
                nic.state = s;
            }
            if let Some(u) = &req.cn_uuid {
                if u.is_empty() {
                    nic.cn_uuid = None;
                } else if let Some(u) = c.take(validate::uuid("cn_uuid", u)) {
                    nic.cn_uuid = Some(u);
                }
            }
            if let Some(m) = &req.model {
                nic.model = Some(m.clone()).filter(|m| !m.is_empty());
            }
            if let Some(tags) = &req.nic_tags_provided {
                nic.nic_tags_provided = self
                    .nic_tags_provided(&mut c, &tags.values, &mut Lookups::default())
                    .await?;
            }
            triton_common::set_given!(req => nic [
                allow_dhcp_spoofing,
                allow_ip_spoofing,
                allow_mac_spoofing,
                allow_restricted_traffic,
                allow_unfiltered_promisc,
                underlay,
            ]);
            c.finish()?;
            let mut ops = Vec::new();
            if let Some(p) = req.primary {
                if p && !nic.primary {
                    ops.extend(
                        self.clear_primary_ops(&nic.belongs_to_uuid, &nic.mac)
                            .await?,
                    );
                }
                nic.primary = p;
            }
            nic.modified_timestamp = triton_common::time::now_rfc3339();
            ops.insert(
                0,
                store::put_op(NICS, &nic.mac, &nic, EtagCondition::Is(stored.etag))?,
            );
            // Of what an update may change, only the compute node moves a mapping
            // (placed, moved, or taken off a node).
            if before.cn_uuid != nic.cn_uuid {
                let (old, new) = (self.mapping(&before).await?, self.mapping(&nic).await?);
                ops.extend(self.portolan_ops(old.as_ref(), new.as_ref()).await?);
            }
            match self.store.batch(&ops).await {
                Ok(()) => return self.with_network(nic).await,
                Err(e) if store::conflict(&e).is_some() => continue,
                Err(e) => return Err(Error::moray("batch update NIC")(e)),
            }
        }
        Err(gave_up(format!("update NIC {}", req.mac)))
    }

    /// Deletes the NIC and frees its IP in one transaction (a reserved IP stays
    /// reserved, only unassigned).
    #[tracing::instrument(skip(self))]
    pub async fn delete_nic(&self, mac_text: &str) -> Result<()> {
        let mut tries = RetryPolicy::DEFAULT.start();
        while tries.next().await {
            let stored = self.nic(mac_text).await?;
            let nic = stored.value;
            let mut ops = vec![store::delete_op(
                NICS,
                &nic.mac,
                EtagCondition::Is(stored.etag),
            )];
            let mapping = self.mapping(&nic).await?;
            ops.extend(self.portolan_ops(mapping.as_ref(), None).await?);
            if let (Some(net), Some(ip)) = (&nic.network_uuid, &nic.ip) {
                let ip_num = ip::parse_ip(ip)
                    .map_err(|reason| StoreError::corrupt(format!("nic {}", nic.mac), reason))?;
                let key = IpRecord::key(net, ip_num);
                if let Some(rec) = self.store.get::<IpRecord>(IPS, &key).await?
                    && rec.value.mac.as_deref() == Some(nic.mac.as_str())
                {
                    if rec.value.reserved {
                        let freed = IpRecord {
                            reserved: true,
                            ..IpRecord::free(net, ip_num)
                        };
                        ops.push(store::put_op(
                            IPS,
                            &key,
                            &freed,
                            EtagCondition::Is(rec.etag),
                        )?);
                    } else {
                        ops.push(store::delete_op(IPS, &key, EtagCondition::Is(rec.etag)));
                    }
                }
            }
            match self.store.batch(&ops).await {
                Ok(()) => {
                    tracing::info!(mac = %nic.mac, ip = ?nic.ip, "NIC deleted, IP released");
                    if let Some(net) = &nic.network_uuid {
                        self.ips_changed(net).await;
                    }
                    return Ok(());
                }
                // The NIC, its IP record or its underlay row went meanwhile: read them
                // again (a NIC gone is then ResourceNotFound).
                Err(e) if e.name() == "ObjectNotFoundError" => continue,
                Err(e) if store::conflict(&e).is_some() => continue,
                Err(e) => return Err(Error::moray("batch delete NIC")(e)),
            }
        }
        Err(gave_up(format!("delete NIC {mac_text}")))
    }

    /// The valid names of `tags` (NIC tags a NIC provides), each of which must exist;
    /// every problem goes to `c`.
    async fn nic_tags_provided(
        &self,
        c: &mut Checks,
        tags: &[String],
        lookups: &mut Lookups,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for t in tags {
            if let Some(t) = c.take(validate::nic_tag_name("nic_tags_provided", t)) {
                if !lookups.tag_exists(self, &t).await? {
                    c.push(FieldError::invalid(
                        "nic_tags_provided",
                        format!("nic tag {t:?} does not exist"),
                    ));
                }
                out.push(t);
            }
        }
        Ok(out)
    }
}

/// NICs one CreateNics call takes at most.
pub const MAX_CREATE_NICS: usize = 256;

/// A CreateNic request checked: the NIC to write and where.
struct Plan {
    nic: Nic,
    /// The networks to try, in order: one, or a pool's.
    targets: Vec<Network>,
    pool: Option<NetworkPool>,
    requested_ip: Option<u32>,
    given_mac: Option<u64>,
}

/// One NIC to write, on one network or none.
struct Provision {
    nic: Nic,
    network: Option<Network>,
    requested_ip: Option<u32>,
    /// The caller's MAC (a taken one is then an error, not a reason to draw another).
    given_mac: Option<u64>,
}

fn one_of(mut made: Vec<(Nic, Option<Network>)>) -> (Nic, Option<Network>) {
    made.swap_remove(0)
}

/// What checking requests read from Moray (nic tags, networks, pools), kept across the
/// entries of one CreateNics call so that a batch on one network reads it once.
#[derive(Default)]
struct Lookups {
    tags: HashMap<String, bool>,
    networks: HashMap<String, Option<Network>>,
    pools: HashMap<String, Option<NetworkPool>>,
}

impl Lookups {
    async fn tag_exists(&mut self, napi: &Napi, name: &str) -> Result<bool> {
        if let Some(known) = self.tags.get(name) {
            return Ok(*known);
        }
        let exists = napi.nic_tag(name).await?.is_some();
        self.tags.insert(name.to_string(), exists);
        Ok(exists)
    }

    async fn network(&mut self, store: &Store, uuid: &str) -> Result<Option<Network>> {
        if let Some(known) = self.networks.get(uuid) {
            return Ok(known.clone());
        }
        let n = store.get::<Network>(NETWORKS, uuid).await?.map(|s| s.value);
        self.networks.insert(uuid.to_string(), n.clone());
        Ok(n)
    }

    async fn pool(&mut self, store: &Store, uuid: &str) -> Result<Option<NetworkPool>> {
        if let Some(known) = self.pools.get(uuid) {
            return Ok(known.clone());
        }
        let p = store
            .get::<NetworkPool>(NETWORK_POOLS, uuid)
            .await?
            .map(|s| s.value);
        self.pools.insert(uuid.to_string(), p.clone());
        Ok(p)
    }
}

/// Records in `c` that `owner` (when given) cannot provision on the `kind` `uuid` unless
/// `allowed` says it may.
fn owner_may_use(
    c: &mut Checks,
    owner: Option<&str>,
    allowed: impl FnOnce(&str) -> bool,
    kind: &str,
    uuid: &str,
) {
    if let Some(o) = owner
        && !allowed(o)
    {
        c.push(FieldError::invalid(
            "owner_uuid",
            format!("owner cannot provision on {kind} {uuid}"),
        ));
    }
}
