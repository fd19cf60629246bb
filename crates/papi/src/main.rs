//! `papi [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `PAPI_<KEY>` (see `triton_common::service`).

triton_common::service_main!(
    "papi",
    "PAPI: packages, stored in Moray",
    start = papi::start
);
