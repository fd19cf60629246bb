//! cn-agent
