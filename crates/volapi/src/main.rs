//! `volapi [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `VOLAPI_<KEY>` (see `triton_common::service`).

triton_common::service_main!(
    "volapi",
    "VolAPI: shared NFS volumes, stored in Moray",
    start = volapi::start
);
