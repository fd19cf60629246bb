//! moray
