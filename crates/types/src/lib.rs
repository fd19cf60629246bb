//! triton-types: the types Triton's services and the followers of their change feeds
//! share, so none keeps a private copy.
//!
//! - [`id`]: ids as newtypes over [`uuid::Uuid`] ([`VmUuid`], [`ServerUuid`],
//!   [`NetworkUuid`], [`ImageUuid`], [`OwnerUuid`], ...), written as Triton writes them
//!   (lower-case, hyphenated), with parse errors that name the field; and [`is_uuid`].
//! - [`state`]: VM states, server statuses, NIC states and image states as enums whose
//!   `as_str`/`FromStr` are the strings the services store and the protos carry.
//! - [`value`]: JSON <-> `google.protobuf.Value`/`Struct`, for tags, metadata and
//!   package traits on the wire.
//! - [`mac`]: MAC addresses in the colon form the services keep them in.
//! - [`ssh_key`]: OpenSSH public keys: the one parser (UFDS stores them, CloudAPI
//!   verifies signatures with them), their fingerprints and PEM form.
//!
//! ```
//! use triton_types::{VmState, VmUuid};
//!
//! let vm: VmUuid = "930896af-bf8c-48d4-885c-6573a94b1853".parse().unwrap();
//! assert_eq!(vm.to_string(), "930896af-bf8c-48d4-885c-6573a94b1853");
//! let err = "nope".parse::<VmUuid>().unwrap_err();
//! assert_eq!(err.to_string(), "vm_uuid: \"nope\" is not a UUID");
//! assert_eq!("running".parse::<VmState>().unwrap(), VmState::Running);
//! assert!(!VmState::Destroyed.is_active());
//! ```

#![deny(missing_docs)]

pub mod id;
pub mod mac;
pub mod ssh_key;
pub mod state;
pub mod value;

pub use id::{
    IdError, ImageUuid, JobUuid, NetworkUuid, NicTagUuid, OwnerUuid, PackageUuid, ServerUuid,
    VmUuid, is_uuid,
};
pub use state::{ImageState, NicState, ServerStatus, StateError, VmState};
