//! `cmon [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `CMON_<KEY>` (see `triton_common::service`).

triton_common::service_main!(
    "cmon",
    "CMon: Prometheus metrics for every instance, over HTTPS with client certificates",
    start = cmon::start,
    check = cmon::Config::check
);
