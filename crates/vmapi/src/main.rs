//! `vmapi [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `VMAPI_<KEY>` (see `triton_common::service`).

triton_common::service_main!(
    "vmapi",
    "VMAPI: instances and their durable jobs",
    start = vmapi::start,
    check = vmapi::Config::check
);
