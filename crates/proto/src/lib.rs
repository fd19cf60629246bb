//! Generated tonic/prost code for every service's `.proto` under `proto/`.
//! One module per proto package: `triton.moray.v1` is [`moray::v1`], and so on.

/// Encoded `FileDescriptorSet` of every proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/triton_descriptor.bin"));

pub mod moray {
    pub mod v1 {
        tonic::include_proto!("triton.moray.v1");
    }
}
