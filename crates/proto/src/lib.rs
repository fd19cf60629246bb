//! Generated tonic/prost code for every service's `.proto` under `proto/`.
//! One module per proto package: `triton.moray.v1` is [`moray::v1`], and so on.

// Generated code: a oneof with an upload header beside a bytes chunk is meant to be
// uneven (boxing is prost's choice, not ours).
#![allow(clippy::large_enum_variant)]

/// Encoded `FileDescriptorSet` of every proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/triton_descriptor.bin"));

pub mod moray {
    pub mod v1 {
        tonic::include_proto!("triton.moray.v1");
    }
}

pub mod cnapi {
    pub mod v1 {
        tonic::include_proto!("triton.cnapi.v1");
    }
}

pub mod cnagent {
    pub mod v1 {
        tonic::include_proto!("triton.cnagent.v1");
    }
}

pub mod napi {
    pub mod v1 {
        tonic::include_proto!("triton.napi.v1");
    }
}

pub mod imgapi {
    pub mod v1 {
        tonic::include_proto!("triton.imgapi.v1");
    }
}

pub mod manatee {
    pub mod v1 {
        tonic::include_proto!("triton.manatee.v1");
    }
}

pub mod ufds {
    pub mod v1 {
        tonic::include_proto!("triton.ufds.v1");
    }
}

pub mod papi {
    pub mod v1 {
        tonic::include_proto!("triton.papi.v1");
    }
}

pub mod vmapi {
    pub mod v1 {
        tonic::include_proto!("triton.vmapi.v1");
    }
}
