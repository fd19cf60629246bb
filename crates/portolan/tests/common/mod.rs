//! The fabric every Portolan test starts from: a real Portolan on real Moray (through
//! `dc-testkit`), with rows written as NAPI writes them (`portolan_client::buckets`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use dc_testkit::{Dc, Options, Service};
use moray_client::{EtagCondition, MorayClient};
use portolan_client::buckets::{
    Buckets, CnNetEvent, LogRecord, RECORD_VERSION, UnderlayMapping, VXLAN_PORT, VnetMacIp,
    ip_text, mac_number, vnet_mac_ip_key,
};
use uuid::Uuid;

/// Account A's fabric.
pub const VNET_A: u32 = 4242;
/// Account B's fabric (same subnet and VLAN as A's).
pub const VNET_B: u32 = 9999;
pub const VLAN: u16 = 7;

/// A's instance on node 1.
pub const MAC_1: [u8; 6] = [0x90, 0xb8, 0xd0, 0x00, 0x00, 0x01];
pub const IP_1: &str = "192.168.128.5";
/// A's instance on node 2, deleted.
pub const MAC_GONE: [u8; 6] = [0x90, 0xb8, 0xd0, 0x00, 0x00, 0x02];
pub const IP_GONE: &str = "192.168.128.6";
/// B's instance on node 2, only on B's vnet.
pub const MAC_B: [u8; 6] = [0x90, 0xb8, 0xd0, 0x00, 0x00, 0x03];
pub const IP_B: &str = "192.168.128.7";
/// A's IPv6 instance on node 2.
pub const MAC_6: [u8; 6] = [0x90, 0xb8, 0xd0, 0x00, 0x00, 0x06];
pub const IP_6: &str = "fd00::6";

pub const UNDERLAY_1: &str = "10.88.0.1";
pub const UNDERLAY_2: &str = "10.88.0.2";
/// An address no node has.
pub const UNDERLAY_NONE: &str = "10.88.0.99";

pub struct Fabric {
    pub dc: Dc,
    pub buckets: Buckets,
    pub cn_1: Uuid,
    pub cn_2: Uuid,
    /// Node 1's log, oldest first: a VL2 entry (MAC_GONE), then a VL3 entry (IP_GONE).
    pub log_1: Vec<Uuid>,
}

impl Fabric {
    /// With Portolan's default config (its answers cached for 1 s).
    pub async fn start() -> Fabric {
        Fabric::start_with(|_| {}).await
    }

    pub async fn start_with(
        configure: impl Fn(&mut dc_testkit::services::portolan::Config) + Send + Sync + 'static,
    ) -> Fabric {
        let dc = Dc::start(Options {
            configure_portolan: Box::new(configure),
            ..Options::only(Service::Portolan)
        })
        .await;
        let moray = MorayClient::connect(&dc.moray_url()).await.unwrap();
        let buckets = Buckets::new(moray);
        let (cn_1, cn_2) = (Uuid::new_v4(), Uuid::new_v4());
        let mut fabric = Fabric {
            dc,
            buckets,
            cn_1,
            cn_2,
            log_1: Vec::new(),
        };
        fabric.underlay(cn_1, UNDERLAY_1).await;
        fabric.underlay(cn_2, UNDERLAY_2).await;
        fabric.nic(IP_1, MAC_1, VNET_A, cn_1, false).await;
        fabric.nic(IP_GONE, MAC_GONE, VNET_A, cn_2, true).await;
        fabric.nic(IP_B, MAC_B, VNET_B, cn_2, false).await;
        fabric.nic(IP_6, MAC_6, VNET_A, cn_2, false).await;
        let vl2 = fabric.vl2_event(cn_1, MAC_GONE, VNET_A).await;
        let vl3 = fabric
            .event(
                cn_1,
                LogRecord::Vl3 {
                    ip: ip_text(IP_GONE.parse().unwrap()),
                    mac: mac_number(MAC_GONE),
                    vlan: VLAN,
                    vnet_id: VNET_A,
                },
            )
            .await;
        fabric.log_1 = vec![vl2, vl3];
        fabric
    }

    pub fn svp_addr(&self) -> std::net::SocketAddr {
        self.dc.addr(Service::Portolan)
    }

    pub async fn underlay(&self, cn: Uuid, ip: &str) {
        let row = UnderlayMapping {
            cn_uuid: cn,
            ip: ip_text(ip.parse().unwrap()),
            port: VXLAN_PORT,
        };
        self.buckets
            .underlay_mappings
            .put(&cn.to_string(), &row, EtagCondition::Any)
            .await
            .unwrap();
    }

    pub async fn nic(&self, ip: &str, mac: [u8; 6], vnet_id: u32, cn: Uuid, deleted: bool) {
        let ip: IpAddr = ip.parse().unwrap();
        let row = VnetMacIp {
            mac: mac_number(mac),
            ip: ip_text(ip),
            cn_uuid: cn,
            vnet_id,
            vlan_id: VLAN,
            version: RECORD_VERSION,
            deleted,
        };
        self.buckets
            .vnet_mac_ip
            .put(&vnet_mac_ip_key(ip, vnet_id), &row, EtagCondition::Any)
            .await
            .unwrap();
    }

    /// Adds an event to `cn`'s log (the log is in write order); its id.
    pub async fn event(&self, cn: Uuid, record: LogRecord) -> Uuid {
        let id = Uuid::new_v4();
        let vnet_id = match &record {
            LogRecord::Vl2 { vnet_id, .. } | LogRecord::Vl3 { vnet_id, .. } => *vnet_id,
        };
        let row = CnNetEvent {
            cn_uuid: cn,
            vnet_id,
            version: RECORD_VERSION,
            record,
        };
        self.buckets
            .cn_net_events
            .insert(&id.to_string(), &row)
            .await
            .unwrap();
        id
    }

    /// A VL2 event for `cn`: forget `mac` on `vnet_id`.
    pub async fn vl2_event(&self, cn: Uuid, mac: [u8; 6], vnet_id: u32) -> Uuid {
        let mac = mac_number(mac);
        self.event(cn, LogRecord::Vl2 { mac, vnet_id }).await
    }
}
