//! moray-client
