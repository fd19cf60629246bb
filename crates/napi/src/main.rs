//! `napi [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `NAPI_<KEY>` (see `triton_common::service`).

triton_common::service_main!(
    "napi",
    "Triton NAPI: nic tags, networks, IPs, NICs and fabrics",
    start = napi::start
);
