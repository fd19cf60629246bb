//! manatee
