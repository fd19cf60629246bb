//! Generated tonic/prost code for every service's `.proto` under `proto/`.
//! One module per proto package: `triton.moray.v1` is [`moray::v1`], and so on; [`feed`]
//! also has what every owner's change feed shares.

// Generated code: a oneof with an upload header beside a bytes chunk is meant to be
// uneven (boxing is prost's choice, not ours).
#![allow(clippy::large_enum_variant)]

/// Encoded `FileDescriptorSet` of every proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/triton_descriptor.bin"));

pub mod feed;

/// `pub mod <name> { pub mod v1 { <the generated code of package triton.<name>.v1> } }`
/// for each package.
macro_rules! packages {
    ($($name:ident: $package:literal,)*) => {$(
        pub mod $name {
            pub mod v1 {
                tonic::include_proto!($package);
            }
        }
    )*};
}

packages! {
    moray: "triton.moray.v1",
    cnapi: "triton.cnapi.v1",
    cnagent: "triton.cnagent.v1",
    napi: "triton.napi.v1",
    imgapi: "triton.imgapi.v1",
    manatee: "triton.manatee.v1",
    ufds: "triton.ufds.v1",
    papi: "triton.papi.v1",
    vmapi: "triton.vmapi.v1",
    cns: "triton.cns.v1",
    volapi: "triton.volapi.v1",
}
