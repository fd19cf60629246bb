//! `ufds [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `UFDS_<KEY>` (see `triton_common::service`).

triton_common::service_main!(
    "ufds",
    "UFDS: accounts and SSH keys, stored in Moray",
    start = ufds::start
);
