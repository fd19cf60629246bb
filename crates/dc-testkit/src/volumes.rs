//! VolAPI in a test datacenter ([`crate::Options::volapi`], which brings compute):
//! Triton's `sdc_volume_nfs_*` packages in PAPI and an admin-owned `nfsserver` image in
//! IMGAPI (sim nodes run any image), VolAPI started in-process following the
//! datacenter's VMAPI (which gets its `volapi_url`, as CloudAPI does), with UFDS for the
//! owners' default networks. [`Dc::volapi`] is its client; [`Dc::restart_volapi`] stops
//! and starts it on the same port.

use std::time::Duration;

use tonic::transport::Channel;
use triton_proto::papi::v1 as papi_pb;
use triton_proto::ufds::v1 as ufds_pb;
use triton_proto::vmapi::v1 as vm_pb;
use triton_proto::volapi::v1 as vol_pb;
use triton_proto::volapi::v1::vol_api_client::VolApiClient;

use crate::{ADMIN_UUID, Dc, Options, Service, package_fields, wait_for};

/// Triton's volume sizes in GiB: 10 to 100 by 10, then 200 to 1000 by 100.
pub fn volume_sizes_gib() -> Vec<u64> {
    (1..=10)
        .map(|n| n * 10)
        .chain((2..=10).map(|n| n * 100))
        .collect()
}

/// A loopback port held (bound) until the service that needs it starts, for a service
/// whose URL others need before it starts.
pub(crate) fn hold_port() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port")
}

impl Dc {
    pub(crate) async fn start_volapi(&mut self, options: &Options, held: std::net::TcpListener) {
        for gib in volume_sizes_gib() {
            self.create_package(papi_pb::PackageFields {
                max_swap: Some(256),
                quota: Some(gib * 1024),
                max_lwps: Some(1000),
                ..package_fields(&format!("sdc_volume_nfs_{gib}"), 256)
            })
            .await;
        }
        self.image(
            "nfsserver",
            "1.0.0",
            false,
            ADMIN_UUID,
            b"a simulated nfsserver image".to_vec(),
        )
        .await;
        let mut config = self.volapi_config();
        let port = held.local_addr().expect("held port").port();
        config.service.listen = format!("127.0.0.1:{port}");
        drop(held);
        (options.configure_volapi)(&mut config);
        self.volapi_config = Some(config);
        self.start_volapi_again().await;
    }

    /// The config the datacenter's VolAPI starts with (a loopback port picked at start,
    /// reservations checked every 500 ms): a test that starts its own begins from it.
    pub fn volapi_config(&self) -> volapi::Config {
        let url = |s| format!("http://{}", self.addr(s));
        let mut config = volapi::Config {
            vmapi_url: url(Service::Vmapi),
            papi_url: url(Service::Papi),
            napi_url: url(Service::Napi),
            imgapi_url: url(Service::Imgapi),
            ufds_url: url(Service::Ufds),
            reservation_gc_ms: 500,
            ..Default::default()
        };
        config.service.listen = "127.0.0.1:0".into();
        config.service.moray_url = self.moray_url();
        config
    }

    /// VolAPI's client.
    #[track_caller]
    pub fn volapi(&self) -> VolApiClient<Channel> {
        VolApiClient::new(crate::dc::grpc(self.addr(Service::Volapi)))
    }

    /// A volume as VolAPI holds it (any owner's).
    pub async fn volume(&self, uuid: &str) -> Result<vol_pb::Volume, tonic::Status> {
        self.volapi()
            .get_volume(vol_pb::GetVolumeRequest {
                uuid: uuid.into(),
                owner_uuid: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The reservations ListVolumeReservations gives for `request`.
    pub async fn volume_reservations(
        &self,
        request: vol_pb::ListVolumeReservationsRequest,
    ) -> Vec<vol_pb::VolumeReservation> {
        self.volapi()
            .list_volume_reservations(request)
            .await
            .expect("ListVolumeReservations")
            .into_inner()
            .reservations
    }

    /// Waits (up to 60 s) until volume `uuid` is in `state`, and gives it.
    pub async fn wait_volume(&self, uuid: &str, state: &str) -> vol_pb::Volume {
        let read = || async { self.volume(uuid).await.expect("GetVolume") };
        let what = format!("volume {uuid} {state}");
        wait_for(&what, Duration::from_secs(60), read, |v| v.state == state).await
    }

    /// A volume `name` of the seeded owner on its default fabric network, once `ready`.
    pub async fn ready_volume(&self, name: &str) -> vol_pb::Volume {
        let owner = self.seed().owner.clone();
        self.default_network(&owner).await;
        let v = self
            .volapi()
            .create_volume(vol_pb::CreateVolumeRequest {
                owner_uuid: owner,
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("CreateVolume")
            .into_inner();
        self.wait_volume(&v.uuid, "ready").await
    }

    /// Waits (up to 60 s) until `owner` has a default (fabric) network, and gives it.
    pub async fn default_network(&self, owner: &str) -> String {
        let read = || async {
            self.ufds()
                .get_account(ufds_pb::GetAccountRequest {
                    account: owner.to_string(),
                })
                .await
                .expect("GetAccount")
                .into_inner()
        };
        let what = format!("a default network for {owner}");
        let has_one = |a: &ufds_pb::Account| !a.default_network.is_empty();
        wait_for(&what, Duration::from_secs(60), read, has_one)
            .await
            .default_network
    }

    /// VMs (any owner's) whose alias matches `alias` (VMAPI's filter: `*` at the ends).
    pub async fn vms_with_alias(&self, alias: &str) -> Vec<vm_pb::Vm> {
        self.vmapi()
            .list_vms(vm_pb::ListVmsRequest {
                alias: alias.into(),
                ..Default::default()
            })
            .await
            .expect("ListVms")
            .into_inner()
            .vms
    }

    /// Stops VolAPI (waiting up to 30 s for it to end).
    pub async fn stop_volapi(&mut self) {
        self.volapi_run.stop().await;
    }

    /// Starts VolAPI again on its port (after [`Dc::stop_volapi`]).
    pub async fn start_volapi_again(&mut self) {
        let config = self
            .volapi_config
            .clone()
            .expect("this test datacenter has no VolAPI: set Options::volapi");
        let shutdown = self.volapi_run.next_run(&self.shutdown);
        let running = volapi::start(config, shutdown)
            .await
            .expect("VolAPI starts");
        self.addrs.push((Service::Volapi, running.addr));
        self.volapi_run.running(running.task);
    }

    /// Stops VolAPI and starts it again on the same port.
    pub async fn restart_volapi(&mut self) {
        self.stop_volapi().await;
        self.start_volapi_again().await;
    }
}
