//! `cns [-f|--config FILE] [--check-config]`: serves DNS and the admin API until SIGTERM
//! or SIGINT; every config key can also be set as `CNS_<KEY>` (see
//! `triton_common::service`).

triton_common::service_main!(
    "cns",
    "CNS: authoritative DNS for every instance and service",
    start = cns::start,
    check = cns::Config::check
);
