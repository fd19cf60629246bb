//! The follower's file: its state, its position and every position it applied, written
//! whole to a temporary file and renamed over the old one, so that a follower killed at
//! any moment finds either the old or the new checkpoint.

use std::path::Path;

use prost::Message;
use triton_proto::vmapi::v1 as pb;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Checkpoint {
    /// The last position applied; 0 before the first snapshot.
    #[prost(uint64, tag = "1")]
    pub position: u64,
    /// The VMs as of `position`, by uuid.
    #[prost(message, repeated, tag = "2")]
    pub vms: Vec<pb::Vm>,
    /// Every position applied, in the order applied: a snapshot's, then each change's.
    #[prost(uint64, repeated, tag = "3")]
    pub applied: Vec<u64>,
}

impl Checkpoint {
    /// The checkpoint in `path`, or an empty start when there is none.
    pub fn load(path: &Path) -> std::io::Result<Checkpoint> {
        match std::fs::read(path) {
            Ok(bytes) => Checkpoint::decode(bytes.as_slice())
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
            Err(e) => Err(e),
        }
    }

    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&self.encode_to_vec())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}
