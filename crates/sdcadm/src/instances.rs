//! Service instances as zones, as Triton deploys its own services: a service's image is
//! imported into IMGAPI (`sdcadm images import`), and `sdcadm create <service>` provisions
//! it through VMAPI onto a `linux` compute node, where the service runs and joins the
//! datacenter.
//!
//! `create` does what Triton's SAPI and config-agent do between them: it renders the
//! service's config from `deploy/services.toml` (zone context) with every other service
//! at the headnode's admin address and the service itself at the instance's own admin IP,
//! and hands it to the instance in `internal_metadata` ([`CONFIG_METADATA_KEY`]); the
//! image's start script reads it there. The instance is owned by the admin account, sits
//! on the `admin` network, and is tagged `smartdc_role=<service>` (Triton's tag for a
//! service zone), which is how `sdcadm instances` and `sdcadm delete` find it.
//!
//! sdcadm reaches the APIs at `api_host` (the headnode itself: 127.0.0.1) on the ports of
//! services.toml.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tonic::transport::Channel;
use triton_common::status::found;
use triton_proto::cnapi::v1 as cnapi;
use triton_proto::imgapi::v1 as imgapi;
use triton_proto::napi::v1 as napi;
use triton_proto::vmapi::v1 as vmapi;

use crate::coal::Progress;
use crate::deploy::{Context, ContextKind, Deployment, Service};
use crate::error::Error;
use crate::images::CONFIG_METADATA_KEY;

/// Image upload chunk (IMGAPI recommends 1 MiB).
const CHUNK: usize = 1024 * 1024;
/// How long a provision or a delete job may take before sdcadm gives up waiting (the job
/// goes on in VMAPI).
const JOB_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a new instance's service has to answer its health check.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);
/// The tag marking a service zone, with the service's name as value (Triton's).
pub const ROLE_TAG: &str = "smartdc_role";
/// The network service zones are on.
pub const ADMIN_NETWORK: &str = "admin";

/// Where the datacenter's APIs are.
#[derive(Debug, Clone)]
pub struct Datacenter {
    pub deployment: Deployment,
    /// Where sdcadm reaches the APIs (it runs on the headnode).
    pub api_host: String,
    /// Services reached elsewhere than `api_host`: service -> host (a compose
    /// deployment's containers, each at its own address).
    pub hosts: BTreeMap<String, String>,
    /// Where a zone on the admin network reaches them: the headnode's admin address.
    pub admin_ip: Ipv4Addr,
    /// The admin account: owner of service zones.
    pub admin_uuid: String,
}

impl Datacenter {
    /// Without `api_host`, each service is where CoaL runs it (the internal APIs at the
    /// admin bridge's address, the others at 127.0.0.1); `admin_ip` defaults to the
    /// address of CoaL's admin bridge in services.toml.
    pub fn new(
        deployment: Deployment,
        api_host: Option<String>,
        admin_ip: Option<Ipv4Addr>,
    ) -> Result<Datacenter, Error> {
        let admin_ip = match admin_ip {
            Some(ip) => ip,
            None => deployment
                .coal
                .bridges
                .iter()
                .find(|b| b.nic_tag == ADMIN_NETWORK)
                .and_then(|b| b.address.split('/').next()?.parse().ok())
                .ok_or_else(|| {
                    Error::Usage(
                        "no admin bridge address in deploy/services.toml; give --admin-ip".into(),
                    )
                })?,
        };
        let admin_uuid = deployment.admin_uuid();
        let mut hosts = BTreeMap::new();
        if api_host.is_none() {
            let coal = Context::new(ContextKind::Coal, &deployment);
            for s in &deployment.services {
                hosts.insert(s.name.clone(), coal.host_of(&s.name));
            }
        }
        Ok(Datacenter {
            deployment,
            api_host: api_host.unwrap_or_else(|| "127.0.0.1".into()),
            hosts,
            admin_ip,
            admin_uuid,
        })
    }

    /// host:port of port `port` of `service`: its entry in `hosts`, else `api_host`.
    pub fn addr(&self, service: &str, port: &str) -> Result<String, Error> {
        let p = self
            .deployment
            .service(service)
            .and_then(|s| s.ports.get(port))
            .ok_or_else(|| Error::Usage(format!("deploy/services.toml has no {service}.{port}")))?;
        let host = self.hosts.get(service).unwrap_or(&self.api_host);
        Ok(format!("{host}:{p}"))
    }

    async fn channel(&self, service: &str) -> Result<Channel, Error> {
        crate::coal::seed::channel(&self.addr(service, "grpc")?).await
    }
}

/// IMGAPI's form of a manifest as `sdcadm images build` (or CoaL) writes it.
pub fn image_from_manifest(m: &Json) -> Result<imgapi::Image, Error> {
    let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
    let f = &m["files"][0];
    if s("uuid").is_empty() || f["sha1"].as_str().is_none() || f["size"].as_u64().is_none() {
        return Err(Error::Usage(
            "the manifest needs uuid and files[0].sha1 and .size".into(),
        ));
    }
    let tags = m["tags"]
        .as_object()
        .map(|t| {
            t.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Json::String(x) => x.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(imgapi::Image {
        v: 2,
        uuid: s("uuid"),
        owner: s("owner"),
        name: s("name"),
        version: s("version"),
        description: s("description"),
        public: m["public"].as_bool().unwrap_or(false),
        r#type: s("type"),
        os: s("os"),
        tags,
        files: vec![imgapi::ImageFile {
            sha1: f["sha1"].as_str().unwrap_or_default().into(),
            size: f["size"].as_u64().unwrap_or_default(),
            compression: f["compression"].as_str().unwrap_or("gzip").into(),
            dataset_guid: String::new(),
        }],
        ..Default::default()
    })
}

/// What [`import_image`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// Imported and activated.
    New,
    /// It was there unactivated (an import cut short); activated now.
    Activated,
    /// It was there already.
    AlreadyThere,
}

/// Imports an image (manifest and file) into IMGAPI, keeping its uuid, and activates it;
/// an image already there is left as it is.
pub async fn import_image(ch: Channel, manifest: &Json, file: Vec<u8>) -> Result<Imported, Error> {
    let image = image_from_manifest(manifest)?;
    let mut c = imgapi::imgapi_client::ImgapiClient::new(ch);
    let uuid = image.uuid.clone();
    let get = imgapi::ImageRequest {
        uuid: uuid.clone(),
        account: None,
    };
    let existing =
        found(c.get_image(get).await).map_err(Error::api(format!("imgapi: get {uuid}")))?;
    if let Some(existing) = existing {
        if existing.state == "unactivated" {
            c.activate_image(imgapi::ImageRequest {
                uuid: uuid.clone(),
                account: None,
            })
            .await
            .map_err(Error::api(format!("imgapi: activate {uuid}")))?;
            return Ok(Imported::Activated);
        }
        return Ok(Imported::AlreadyThere);
    }
    let name = image.name.clone();
    let mut parts = vec![imgapi::ImportImageRequest {
        part: Some(imgapi::import_image_request::Part::Header(
            imgapi::ImportImageHeader {
                manifest: Some(image),
                activate: true,
            },
        )),
    }];
    for chunk in file.chunks(CHUNK) {
        parts.push(imgapi::ImportImageRequest {
            part: Some(imgapi::import_image_request::Part::Chunk(chunk.to_vec())),
        });
    }
    c.import_image(futures::stream::iter(parts))
        .await
        .map_err(Error::api(format!("imgapi: import of {name} ({uuid})")))?;
    Ok(Imported::New)
}

/// `sdcadm images import MANIFEST FILE`.
pub async fn import_files(
    dc: &Datacenter,
    manifest: &std::path::Path,
    file: &std::path::Path,
) -> Result<(Json, Imported), Error> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| Error::io("read the manifest", manifest, e))?;
    let m: Json = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("{} is not JSON: {e}", manifest.display())))?;
    let data = std::fs::read(file).map_err(|e| Error::io("read the image file", file, e))?;
    let want = m["files"][0]["size"].as_u64();
    if want != Some(data.len() as u64) {
        return Err(Error::Usage(format!(
            "{} is {} bytes but the manifest says {}",
            file.display(),
            data.len(),
            want.map(|w| w.to_string())
                .unwrap_or_else(|| "nothing".into())
        )));
    }
    let outcome = import_image(dc.channel("imgapi").await?, &m, data).await?;
    Ok((m, outcome))
}

/// What `sdcadm create` is asked for (its command line).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CreateOptions {
    /// The service (a name in deploy/services.toml).
    pub service: String,
    /// The image's uuid (default: the newest active image named after the service).
    #[arg(long)]
    pub image: Option<String>,
    /// Default: <service><N>, the first N not taken.
    #[arg(long)]
    pub alias: Option<String>,
    /// The compute node (default: a running, set-up one with a real agent).
    #[arg(long)]
    pub server: Option<String>,
    /// Its address on the admin network (default: the first free one).
    #[arg(long)]
    pub ip: Option<Ipv4Addr>,
    /// Memory, MiB.
    #[arg(long, default_value_t = 512)]
    pub ram: u64,
}

/// A service zone.
#[derive(Debug, Clone)]
pub struct ServiceInstance {
    pub uuid: String,
    pub alias: String,
    pub service: String,
    pub state: String,
    pub ip: String,
    pub server_uuid: String,
    pub image_uuid: String,
}

impl ServiceInstance {
    fn from_vm(vm: &vmapi::Vm) -> ServiceInstance {
        let service = vm
            .tags
            .get(ROLE_TAG)
            .and_then(|v| match &v.kind {
                Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let ip = vm
            .nics
            .iter()
            .find(|n| n.primary)
            .or(vm.nics.first())
            .map(|n| n.ip.clone())
            .unwrap_or_default();
        ServiceInstance {
            uuid: vm.uuid.clone(),
            alias: vm.alias.clone(),
            service,
            state: vm.state.clone(),
            ip,
            server_uuid: vm.server_uuid.clone(),
            image_uuid: vm.image_uuid.clone(),
        }
    }
}

/// The service's image: `wanted` (a uuid) or the newest active image named after it and
/// tagged as a service image.
async fn find_image(
    dc: &Datacenter,
    service: &str,
    wanted: Option<&str>,
) -> Result<imgapi::Image, Error> {
    let mut c = imgapi::imgapi_client::ImgapiClient::new(dc.channel("imgapi").await?);
    if let Some(uuid) = wanted {
        let image = c
            .get_image(imgapi::ImageRequest {
                uuid: uuid.into(),
                account: None,
            })
            .await
            .map_err(Error::api(format!("imgapi: image {uuid}")))?
            .into_inner();
        return Ok(image);
    }
    let mut images = c
        .list_images(imgapi::ListImagesRequest {
            name: Some(service.into()),
            state: Some("active".into()),
            tags: HashMap::from([("smartdc_service".to_string(), "true".to_string())]),
            ..Default::default()
        })
        .await
        .map_err(Error::api("imgapi: list images"))?
        .into_inner()
        .images;
    images.sort_by(|a, b| a.published_at.cmp(&b.published_at));
    images.pop().ok_or_else(|| {
        Error::Usage(format!(
            "IMGAPI has no active image of {service}: build it (scripts/build-images {service}) and import it (sdcadm images import images/out/{service}-<version>.imgmanifest images/out/{service}-<version>.tar.gz)"
        ))
    })
}

async fn admin_network(dc: &Datacenter) -> Result<napi::Network, Error> {
    let mut c = napi::napi_client::NapiClient::new(dc.channel("napi").await?);
    c.list_networks(napi::ListNetworksRequest {
        name: Some(ADMIN_NETWORK.into()),
        ..Default::default()
    })
    .await
    .map_err(Error::api("napi: list networks"))?
    .into_inner()
    .networks
    .into_iter()
    .next()
    .ok_or_else(|| Error::Usage(format!("NAPI has no network {ADMIN_NETWORK}")))
}

/// The first address of the network's provision range that no NIC holds and nobody
/// reserved (and that is not the headnode's own).
async fn free_ip(dc: &Datacenter, network: &napi::Network) -> Result<Ipv4Addr, Error> {
    let mut c = napi::napi_client::NapiClient::new(dc.channel("napi").await?);
    let mut taken: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut offset = 0;
    loop {
        let page = c
            .list_ips(napi::ListIpsRequest {
                network_uuid: network.uuid.clone(),
                limit: Some(1000),
                offset,
            })
            .await
            .map_err(Error::api("napi: list IPs"))?
            .into_inner()
            .ips;
        let n = page.len();
        taken.extend(
            page.iter()
                .filter(|ip| !ip.free)
                .filter_map(|ip| ip.ip.parse::<Ipv4Addr>().ok()),
        );
        if n < 1000 {
            break;
        }
        offset += 1000;
    }
    let parse = |what: &str, v: &str| {
        v.parse::<Ipv4Addr>().map_err(|_| Error::Api {
            what: format!("napi: network {}", network.name),
            message: format!("{what} {v:?} is not an IPv4 address"),
        })
    };
    let start = u32::from(parse("provision_start_ip", &network.provision_start_ip)?);
    let end = u32::from(parse("provision_end_ip", &network.provision_end_ip)?);
    (start..=end)
        .map(Ipv4Addr::from)
        .find(|ip| !taken.contains(ip) && *ip != dc.admin_ip)
        .ok_or_else(|| Error::Api {
            what: format!("napi: network {}", network.name),
            message: "no free address left in its provision range".into(),
        })
}

/// A running, set-up compute node with a real (not simulated) agent; the headnode first.
async fn pick_server(dc: &Datacenter) -> Result<String, Error> {
    let mut c = cnapi::cnapi_client::CnapiClient::new(dc.channel("cnapi").await?);
    let mut servers = c
        .list_servers(cnapi::ListServersRequest {
            setup: Some(true),
            status: "running".into(),
            ..Default::default()
        })
        .await
        .map_err(Error::api("cnapi: list servers"))?
        .into_inner()
        .servers;
    servers.retain(|s| {
        serde_json::from_str::<Json>(&s.sysinfo_json)
            .map(|j| j["Simulated"].as_bool() != Some(true))
            .unwrap_or(false)
    });
    servers.sort_by_key(|s| (!s.headnode, s.hostname.clone()));
    servers.first().map(|s| s.uuid.clone()).ok_or_else(|| {
        Error::Usage(
            "CNAPI has no running, set-up compute node with a real (linux) agent; give --server"
                .into(),
        )
    })
}

async fn vms(dc: &Datacenter, service: Option<&str>) -> Result<Vec<vmapi::Vm>, Error> {
    let mut c = vmapi::vmapi_client::VmapiClient::new(dc.channel("vmapi").await?);
    let got = c
        .list_vms(vmapi::ListVmsRequest {
            owner_uuid: dc.admin_uuid.clone(),
            state: "active".into(),
            tags: HashMap::from([(ROLE_TAG.to_string(), service.unwrap_or("*").to_string())]),
            ..Default::default()
        })
        .await
        .map_err(Error::api("vmapi: list VMs"))?
        .into_inner()
        .vms;
    Ok(got)
}

/// The service zones (of one service, or all), by alias.
pub async fn list(dc: &Datacenter, service: Option<&str>) -> Result<Vec<ServiceInstance>, Error> {
    let mut out: Vec<ServiceInstance> = vms(dc, service)
        .await?
        .iter()
        .map(ServiceInstance::from_vm)
        .collect();
    out.sort_by(|a, b| (&a.service, &a.alias).cmp(&(&b.service, &b.alias)));
    Ok(out)
}

/// Waits for a VMAPI job to finish; its error when it failed.
async fn wait_job(dc: &Datacenter, job_uuid: &str, what: &str) -> Result<(), Error> {
    let mut c = vmapi::vmapi_client::VmapiClient::new(dc.channel("vmapi").await?);
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let job = c
            .wait_job(vmapi::WaitJobRequest {
                uuid: job_uuid.into(),
                timeout_ms: 20_000,
            })
            .await
            .map_err(Error::api(format!("vmapi: job {job_uuid}")))?
            .into_inner();
        match job.execution.as_str() {
            "succeeded" => return Ok(()),
            "failed" | "canceled" => {
                return Err(Error::Api {
                    what: format!("{what} (job {job_uuid})"),
                    message: format!("{}: {}", job.execution, job.error),
                });
            }
            _ if Instant::now() > deadline => {
                return Err(Error::Api {
                    what: format!("{what} (job {job_uuid})"),
                    message: format!("still {} after {}s", job.execution, JOB_TIMEOUT.as_secs()),
                });
            }
            _ => {}
        }
    }
}

/// The config of `service` for a zone at `ip` in this datacenter: every other service at
/// the headnode's admin address, the service itself at `ip`.
pub fn zone_config(dc: &Datacenter, service: &Service, ip: Ipv4Addr) -> Result<String, Error> {
    let mut ctx = Context::new(ContextKind::Zone, &dc.deployment);
    for s in &dc.deployment.services {
        ctx.hosts.insert(s.name.clone(), dc.admin_ip.to_string());
    }
    ctx.hosts.insert(service.name.clone(), ip.to_string());
    let rendered = dc.deployment.render(service, &ctx)?;
    let body = toml::to_string(&rendered.config).map_err(|e| Error::Check(e.to_string()))?;
    Ok(format!(
        "# {}: made by `sdcadm create` from deploy/services.toml for the zone at {ip};\n# the datacenter's services at {}.\n{body}",
        service.name, dc.admin_ip
    ))
}

/// Provisions a zone of `opts.service` through VMAPI and waits until the service in it
/// answers its health check.
pub async fn create(
    dc: &Datacenter,
    opts: &CreateOptions,
    progress: &Progress,
) -> Result<ServiceInstance, Error> {
    let service = dc
        .deployment
        .service(&opts.service)
        .filter(|s| s.krate.is_some())
        .ok_or_else(|| {
            let names: Vec<&str> = dc
                .deployment
                .services
                .iter()
                .filter(|s| s.krate.is_some())
                .map(|s| s.name.as_str())
                .collect();
            Error::Usage(format!(
                "{:?} is not a service with an image; one of: {}",
                opts.service,
                names.join(", ")
            ))
        })?;
    let image = find_image(dc, &service.name, opts.image.as_deref()).await?;
    progress.step(format!(
        "image {} {} ({})",
        image.name, image.version, image.uuid
    ));
    let network = admin_network(dc).await?;
    let ip = match opts.ip {
        Some(ip) => ip,
        None => free_ip(dc, &network).await?,
    };
    let server = match &opts.server {
        Some(s) => s.clone(),
        None => pick_server(dc).await?,
    };
    let alias = match &opts.alias {
        Some(a) => a.clone(),
        None => {
            let taken: BTreeSet<String> =
                vms(dc, None).await?.into_iter().map(|v| v.alias).collect();
            (0..)
                .map(|n| format!("{}{n}", service.name))
                .find(|a| !taken.contains(a))
                .unwrap_or_else(|| service.name.clone())
        }
    };
    let config = zone_config(dc, service, ip)?;
    progress.step(format!(
        "{alias}: provisioning on server {server}, network {} ({}), IP {ip}",
        network.name, network.subnet
    ));
    let str_value = |s: &str| prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.into())),
    };
    let mut c = vmapi::vmapi_client::VmapiClient::new(dc.channel("vmapi").await?);
    let job = c
        .create_vm(vmapi::CreateVmRequest {
            owner_uuid: dc.admin_uuid.clone(),
            alias: alias.clone(),
            hostname: alias.clone(),
            brand: "lx".into(),
            image_uuid: image.uuid.clone(),
            ram: Some(opts.ram),
            networks: vec![vmapi::NetworkSpec {
                ipv4_uuid: network.uuid.clone(),
                ipv4_ips: vec![ip.to_string()],
                primary: Some(true),
                ..Default::default()
            }],
            server_uuid: server.clone(),
            tags: [
                (ROLE_TAG.to_string(), str_value(&service.name)),
                ("smartdc_type".to_string(), str_value("core")),
            ]
            .into_iter()
            .collect(),
            internal_metadata: [(CONFIG_METADATA_KEY.to_string(), config)]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await
        .map_err(Error::api(format!("vmapi: create {alias}")))?
        .into_inner();
    wait_job(dc, &job.job_uuid, &format!("provision of {alias}")).await?;
    let vm = c
        .get_vm(vmapi::GetVmRequest {
            uuid: job.vm_uuid.clone(),
            ..Default::default()
        })
        .await
        .map_err(Error::api(format!("vmapi: get {}", job.vm_uuid)))?
        .into_inner();
    let instance = ServiceInstance::from_vm(&vm);
    progress.step(format!(
        "{alias}: {} ({}), IP {}",
        instance.state, instance.uuid, instance.ip
    ));
    wait_healthy(service, &instance.ip, progress).await?;
    Ok(instance)
}

/// Polls the service's own health check at the zone's address.
async fn wait_healthy(service: &Service, ip: &str, progress: &Progress) -> Result<(), Error> {
    let port = service
        .ports
        .get(&service.health.port)
        .copied()
        .unwrap_or(0);
    let addr = format!("{ip}:{port}");
    let started = Instant::now();
    loop {
        match crate::coal::health::check(
            service.health.kind,
            &addr,
            service.health.path.as_deref(),
            std::path::Path::new(""),
        )
        .await
        {
            Ok(()) => {
                progress.step(format!(
                    "{}: healthy at {addr} ({:.1}s)",
                    service.name,
                    started.elapsed().as_secs_f32()
                ));
                return Ok(());
            }
            Err(why) if started.elapsed() > HEALTHY_TIMEOUT => {
                return Err(Error::Service {
                    service: service.name.clone(),
                    message: format!(
                        "the zone runs, but the service is not healthy at {addr} after {}s ({why}); its output is the instance's console.log on the compute node",
                        HEALTHY_TIMEOUT.as_secs()
                    ),
                    log: None,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Deletes a service zone, named by uuid or alias, and waits until it is gone.
pub async fn delete(dc: &Datacenter, instance: &str) -> Result<ServiceInstance, Error> {
    let all = vms(dc, None).await?;
    let vm = all
        .iter()
        .find(|v| v.uuid == instance || v.alias == instance)
        .ok_or_else(|| {
            Error::Usage(format!(
                "no service zone {instance:?} (sdcadm instances lists them)"
            ))
        })?;
    let found = ServiceInstance::from_vm(vm);
    let mut c = vmapi::vmapi_client::VmapiClient::new(dc.channel("vmapi").await?);
    let job = c
        .delete_vm(vmapi::DeleteVmRequest {
            uuid: found.uuid.clone(),
            owner_uuid: dc.admin_uuid.clone(),
        })
        .await
        .map_err(Error::api(format!("vmapi: delete {}", found.alias)))?
        .into_inner();
    wait_job(dc, &job.job_uuid, &format!("delete of {}", found.alias)).await?;
    Ok(found)
}
