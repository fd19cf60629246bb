//! `portolan [-f|--config FILE] [--check-config]`: serves SVP until SIGTERM or SIGINT;
//! every config key can also be set as `PORTOLAN_<KEY>` (see `triton_common::service`).

triton_common::service_main!(
    "portolan",
    "Portolan: the SVP server of fabric overlay lookups, backed by Moray",
    start = portolan::start
);
