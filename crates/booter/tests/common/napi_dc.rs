//! The test datacenter dhcpd runs against, for the tests and the bench: NAPI and CNAPI
//! with the compute services, no sim nodes, and the nic tags the caller names made.
//! (The bench takes this file in by `#[path]`, so it needs nothing else of `common`.)

use dc_testkit::{Dc, Options};
use triton_proto::napi::v1 as napi_pb;

/// A datacenter with the compute services and no sim nodes, its NAPI holding the nic
/// tags `tags`.
pub async fn start(tags: &[&str]) -> Dc {
    let dc = Dc::start(Options {
        compute: true,
        sim_nodes: 0,
        ..Options::default()
    })
    .await;
    let mut napi = dc.napi();
    for tag in tags {
        napi.create_nic_tag(napi_pb::CreateNicTagRequest {
            name: (*tag).into(),
            mtu: None,
        })
        .await
        .unwrap();
    }
    dc
}
