//! `dhcpd [-f|--config FILE] [--check-config]`: serves DHCP, TFTP and HTTP on the admin
//! network until SIGTERM or SIGINT; every config key can also be set as `DHCPD_<KEY>`
//! (see `triton_common::service`).

triton_common::service_main!(
    "dhcpd",
    "Booter: DHCP, TFTP and HTTP that PXE-boot compute nodes",
    start = booter::start,
    check = booter::Config::check
);
