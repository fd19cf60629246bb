//! `moray [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `MORAY_<KEY>` (see `triton_common::service`).

triton_common::service_main!(
    "moray",
    "Moray: JSON objects with typed indexes on PostgreSQL",
    start = moray::start
);
