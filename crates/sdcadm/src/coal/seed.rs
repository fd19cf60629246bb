//! CoaL's seed data, written through the services' own gRPC APIs and only when missing, so
//! a second `coal up` changes nothing: the admin account and its key (UFDS), the sample
//! packages (PAPI), the base image (IMGAPI); the networks NAPI seeds itself (its
//! `seed.enabled`) and are only checked here.

use std::net::Ipv4Addr;
use std::time::Duration;

use tonic::transport::Channel;
use triton_common::channel::ChannelBuilder;
use triton_common::status::found;
use triton_proto::cnapi::v1 as cnapi;
use triton_proto::napi::v1 as napi;
use triton_proto::papi::v1 as papi;
use triton_proto::ufds::v1 as ufds;

use crate::coal::Progress;
use crate::deploy::{Bridge, CoalSeed, SeedImage, SeedPackage, network_of, parse_cidr};
use crate::error::Error;
use crate::instances::Datacenter;

/// Each seeding call's bound.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn channel(addr: &str) -> Result<Channel, Error> {
    ChannelBuilder::new(addr)
        .request_timeout(Some(CALL_TIMEOUT))
        .connect()
        .await
        .map_err(|e| Error::Seed {
            what: addr.into(),
            message: crate::error::chain(&e),
        })
}

fn seed_err(what: &str, s: tonic::Status) -> Error {
    Error::Seed {
        what: what.into(),
        message: format!("{:?}: {}", s.code(), s.message()),
    }
}

/// The admin account (with `uuid`), a member of `operators`, and `public_key` as key
/// "coal". Returns what changed.
pub async fn admin(
    ch: Channel,
    uuid: &str,
    login: &str,
    email: &str,
    public_key: &str,
    fingerprint: &str,
) -> Result<Vec<String>, Error> {
    let mut c = ufds::ufds_client::UfdsClient::new(ch);
    let mut did = Vec::new();
    let get = ufds::GetAccountRequest {
        account: login.into(),
    };
    let account = found(c.get_account(get).await).map_err(|s| seed_err("ufds account", s))?;
    let groups = match account {
        Some(a) => {
            // An admin account from an earlier CoaL gets the flag too.
            if !a.triton_cns_enabled {
                c.update_account(ufds::UpdateAccountRequest {
                    account: login.into(),
                    triton_cns_enabled: Some(true),
                    ..Default::default()
                })
                .await
                .map_err(|s| seed_err("ufds account", s))?;
                did.push(format!("triton_cns_enabled on account {login}"));
            }
            a.groups
        }
        None => {
            c.create_account(ufds::CreateAccountRequest {
                uuid: uuid.into(),
                login: login.into(),
                email: email.into(),
                cn: "CoaL Administrator".into(),
                approved_for_provisioning: true,
                // CNS names the admin's instances (CloudAPI's dns_names).
                triton_cns_enabled: true,
                ..Default::default()
            })
            .await
            .map_err(|s| seed_err("ufds account", s))?;
            did.push(format!("account {login} ({uuid})"));
            Vec::new()
        }
    };
    // The admin is an operator (sdc-ufds's first boot puts admin in cn=operators):
    // CMon shows it compute nodes.
    let operators = crate::accounts::OPERATORS_GROUP;
    if !groups.iter().any(|g| g == operators) {
        c.add_group_member(ufds::GroupMemberRequest {
            group: operators.into(),
            account: login.into(),
        })
        .await
        .map_err(|s| seed_err("ufds operators group", s))?;
        did.push(format!("account {login} in group {operators}"));
    }
    let keys = c
        .list_keys(ufds::ListKeysRequest {
            account: login.into(),
        })
        .await
        .map_err(|s| seed_err("ufds keys", s))?
        .into_inner()
        .keys;
    if keys.iter().any(|k| k.fingerprint == fingerprint) {
        return Ok(did);
    }
    // A key named "coal" from an earlier key pair is replaced.
    if keys.iter().any(|k| k.name == "coal") {
        c.delete_key(ufds::DeleteKeyRequest {
            account: login.into(),
            key: "coal".into(),
        })
        .await
        .map_err(|s| seed_err("ufds old key", s))?;
    }
    c.create_key(ufds::CreateKeyRequest {
        account: login.into(),
        name: "coal".into(),
        key: public_key.trim().into(),
    })
    .await
    .map_err(|s| seed_err("ufds key", s))?;
    did.push(format!("key coal ({fingerprint})"));
    Ok(did)
}

pub async fn packages(ch: Channel, packages: &[SeedPackage]) -> Result<Vec<String>, Error> {
    let mut c = papi::papi_client::PapiClient::new(ch);
    let mut did = Vec::new();
    for p in packages {
        let have = c
            .list_packages(papi::ListPackagesRequest {
                name: p.name.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| seed_err("papi packages", s))?
            .into_inner();
        if !have.packages.is_empty() {
            continue;
        }
        c.create_package(papi::CreatePackageRequest {
            uuid: String::new(),
            fields: Some(papi::PackageFields {
                name: Some(p.name.clone()),
                version: Some("1.0.0".into()),
                active: Some(true),
                max_physical_memory: Some(p.max_physical_memory),
                max_swap: Some(p.max_swap),
                quota: Some(p.quota),
                cpu_cap: Some(p.cpu_cap),
                max_lwps: Some(4000),
                zfs_io_priority: Some(100),
                description: Some(format!(
                    "CoaL sample package, {} MiB",
                    p.max_physical_memory
                )),
                ..Default::default()
            }),
        })
        .await
        .map_err(|s| seed_err(&format!("papi package {}", p.name), s))?;
        did.push(format!("package {}", p.name));
    }
    Ok(did)
}

/// The base image CoaL seeds (busybox and an init), and its manifest, owned by `owner`.
pub fn base_image(img: &SeedImage, owner: &str) -> Result<(Vec<u8>, serde_json::Value), Error> {
    let busybox = super::process::which("busybox").ok_or_else(|| Error::Seed {
        what: "base image".into(),
        message: "busybox is not installed (busybox-static)".into(),
    })?;
    let file = crate::images::base_image(&busybox)?;
    let m = crate::images::manifest(
        &img.name,
        &img.version,
        &img.description,
        owner,
        &file,
        false,
    );
    Ok((file, m))
}

/// Seeds `img` (see [`image`]) and says so as `who` (`imgapi`, or `imgapi (<address>)`).
pub async fn image_step(
    p: &Progress,
    who: &str,
    ch: Channel,
    img: &SeedImage,
    manifest: &serde_json::Value,
    file: Vec<u8>,
) -> Result<(), Error> {
    match image(ch, img, manifest, file).await? {
        Some(d) => p.step(format!("{who}: seeded {d}")),
        None => p.step(format!(
            "{who}: image {} {} already there",
            img.name, img.version
        )),
    }
    Ok(())
}

/// Lists NAPI's admin and external networks as `who` (`napi`, or `napi (<address>)`);
/// without both, an error whose message `missing` writes from how many there are.
pub async fn networks_step(
    p: &Progress,
    who: &str,
    ch: Channel,
    missing: impl FnOnce(usize) -> String,
) -> Result<(), Error> {
    let wanted = ["admin", "external"];
    let have = networks(ch, &wanted).await?;
    for (name, subnet, uuid) in &have {
        p.step(format!("{who}: network {name} {subnet} ({uuid})"));
    }
    if have.len() < wanted.len() {
        return Err(Error::Seed {
            what: "napi networks".into(),
            message: missing(have.len()),
        });
    }
    Ok(())
}

/// Imports and activates the base image unless it is there.
pub async fn image(
    ch: Channel,
    img: &SeedImage,
    manifest: &serde_json::Value,
    file: Vec<u8>,
) -> Result<Option<String>, Error> {
    use crate::instances::{Imported, import_image};
    let uuid = manifest["uuid"].as_str().unwrap_or_default();
    let done = import_image(ch, manifest, file)
        .await
        .map_err(|e| Error::Seed {
            what: format!("imgapi image {}", img.name),
            message: crate::error::chain(&e),
        })?;
    Ok(match done {
        Imported::New => Some(format!("image {} {} ({uuid})", img.name, img.version)),
        Imported::Activated => Some(format!("activated image {} {}", img.name, img.version)),
        Imported::AlreadyThere => None,
    })
}

/// The names of NAPI's networks among `wanted` that exist, with their subnets.
pub async fn networks(
    ch: Channel,
    wanted: &[&str],
) -> Result<Vec<(String, String, String)>, Error> {
    let mut c = napi::napi_client::NapiClient::new(ch);
    let mut out = Vec::new();
    for name in wanted {
        let got = c
            .list_networks(napi::ListNetworksRequest {
                name: Some((*name).into()),
                ..Default::default()
            })
            .await
            .map_err(|s| seed_err("napi networks", s))?
            .into_inner();
        if let Some(n) = got.networks.into_iter().next() {
            out.push((n.name, n.subnet, n.uuid));
        }
    }
    Ok(out)
}

/// The underlay of `bridge` in NAPI, where missing: its nic tag (`sdc_underlay`) and a
/// network of that name on the bridge's subnet, owned by the admin (so no tenant
/// provisions on it), whose addresses CNAPI gives the compute nodes' underlay NICs.
/// Returns what it made.
pub async fn underlay(
    ch: Channel,
    bridge: &Bridge,
    admin_uuid: &str,
) -> Result<Vec<String>, Error> {
    let mut c = napi::napi_client::NapiClient::new(ch);
    let tag = bridge.nic_tag.clone();
    let mut did = Vec::new();
    let tag_err = |s| seed_err(&format!("napi nic tag {tag}"), s);
    let get = napi::GetNicTagRequest { name: tag.clone() };
    if found(c.get_nic_tag(get).await).map_err(tag_err)?.is_none() {
        c.create_nic_tag(napi::CreateNicTagRequest {
            name: tag.clone(),
            mtu: None,
        })
        .await
        .map_err(tag_err)?;
        did.push(format!("nic tag {tag}"));
    }
    let have = c
        .list_networks(napi::ListNetworksRequest {
            name: Some(tag.clone()),
            ..Default::default()
        })
        .await
        .map_err(|s| seed_err("napi networks", s))?
        .into_inner();
    if have.networks.is_empty() {
        let bad = || Error::Seed {
            what: format!("napi network {tag}"),
            message: format!(
                "bridge {}: {:?} is not a.b.c.d/n",
                bridge.name, bridge.address
            ),
        };
        let (host, len) = parse_cidr(&bridge.address).ok_or_else(bad)?;
        let subnet = network_of(&bridge.address).ok_or_else(bad)?;
        let size = 1u32.checked_shl(32 - u32::from(len)).unwrap_or(0);
        if size < 8 {
            return Err(bad());
        }
        let base = u32::from(host) & !(size - 1);
        let start = Ipv4Addr::from(u32::from(host) + 1);
        let end = Ipv4Addr::from(base + size - 6);
        c.create_network(napi::CreateNetworkRequest {
            name: tag.clone(),
            subnet: subnet.clone(),
            provision_start_ip: start.to_string(),
            provision_end_ip: end.to_string(),
            nic_tag: tag.clone(),
            owner_uuids: vec![admin_uuid.to_string()],
            description: "the compute nodes' underlay (VXLAN), made by CoaL".into(),
            ..Default::default()
        })
        .await
        .map_err(|s| seed_err(&format!("napi network {tag}"), s))?;
        did.push(format!("network {tag} {subnet}"));
    }
    Ok(did)
}

/// Compute nodes CNAPI knows: (hostname, status, setup).
pub async fn servers(ch: Channel) -> Result<Vec<(String, String, bool)>, Error> {
    Ok(server_records(ch)
        .await?
        .into_iter()
        .map(|s| (s.hostname, s.status, s.setup))
        .collect())
}

/// The server uuid of the agent at `agent_url` (its GetSysinfo): which node answers there.
pub async fn agent_server_uuid(agent_url: &str) -> Result<String, Error> {
    use triton_proto::cnagent::v1::{GetSysinfoRequest, cn_agent_client::CnAgentClient};
    let err = |message: String| Error::Api {
        what: "cn-agent GetSysinfo".into(),
        message,
    };
    let ch = ChannelBuilder::new(agent_url)
        .request_timeout(Some(Duration::from_secs(5)))
        .connect()
        .await
        .map_err(|e| err(crate::error::chain(&e)))?;
    let info = CnAgentClient::new(ch)
        .get_sysinfo(GetSysinfoRequest {})
        .await
        .map_err(|s| err(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    Ok(info.server_uuid)
}

/// Compute nodes CNAPI knows, whole.
pub async fn server_records(ch: Channel) -> Result<Vec<cnapi::Server>, Error> {
    let mut c = cnapi::cnapi_client::CnapiClient::new(ch);
    let got = c
        .list_servers(cnapi::ListServersRequest::default())
        .await
        .map_err(|s| seed_err("cnapi servers", s))?
        .into_inner();
    Ok(got.servers)
}

/// Seeds the admin account of `seed` with `public_key` (of `fingerprint`) in the UFDS at
/// `ufds` (only what is missing), and says what it did under `label`.
pub async fn admin_account(
    p: &Progress,
    label: &str,
    ufds: &str,
    admin_uuid: &str,
    seed: &CoalSeed,
    public_key: &str,
    fingerprint: &str,
) -> Result<(), Error> {
    let did = admin(
        channel(ufds).await?,
        admin_uuid,
        &seed.admin_login,
        &seed.admin_email,
        public_key,
        fingerprint,
    )
    .await?;
    for d in &did {
        p.step(format!("{label}: seeded {d}"));
    }
    if did.is_empty() {
        p.step(format!(
            "{label}: account {} with key {fingerprint} already there",
            seed.admin_login
        ));
    }
    Ok(())
}

/// Seeds a deployment CoaL did not start (docker compose, say) as `coal up` seeds its own:
/// the admin account with `public_key` (UFDS), the sample packages (PAPI) and the base
/// image (IMGAPI) of services.toml's `[coal]`, only what is missing; then checks NAPI's
/// admin and external networks and lists the compute nodes CNAPI knows.
pub async fn datacenter(dc: &Datacenter, public_key: &str, p: &Progress) -> Result<(), Error> {
    let seed = &dc.deployment.coal;
    let fingerprint = super::setup::md5_fingerprint(public_key)?;
    let ufds = dc.addr("ufds", "grpc")?;
    admin_account(
        p,
        &format!("ufds ({ufds})"),
        &ufds,
        &dc.admin_uuid,
        seed,
        public_key,
        &fingerprint,
    )
    .await?;
    let papi = dc.addr("papi", "grpc")?;
    let did = packages(channel(&papi).await?, &seed.packages).await?;
    p.step(format!(
        "papi ({papi}): {}",
        if did.is_empty() {
            "the sample packages are already there".to_string()
        } else {
            format!("seeded {}", did.join(", "))
        }
    ));
    let (file, m) = base_image(&seed.image, &dc.admin_uuid)?;
    let imgapi = dc.addr("imgapi", "grpc")?;
    let ch = channel(&imgapi).await?;
    image_step(p, &format!("imgapi ({imgapi})"), ch, &seed.image, &m, file).await?;
    let napi = dc.addr("napi", "grpc")?;
    networks_step(p, &format!("napi ({napi})"), channel(&napi).await?, |have| {
        format!(
            "NAPI at {napi} has {have} of the admin and external networks (its seed.enabled makes them)"
        )
    })
    .await?;
    let cnapi = dc.addr("cnapi", "grpc")?;
    for (host, status, setup) in servers(channel(&cnapi).await?).await? {
        p.step(format!(
            "cnapi ({cnapi}): compute node {host}, {status}{}",
            if setup { ", set up" } else { ", not set up" }
        ));
    }
    Ok(())
}
