//! A follower of VMAPI's WatchVms, as CNS or CMon follow it: it keeps every VM and its
//! position in a file and, started again (after a crash, a kill), goes on from the
//! position in the file. It checkpoints every N changes and whenever the feed is idle,
//! not after every change. A change at or below the position already applied (a
//! duplicate) or a snapshot at another position than the one resumed from ends it with
//! exit code 3.
//!
//! ```text
//! cargo run -p vmapi --example follow_vms -- VMAPI_ADDR STATE_FILE [CHECKPOINT_EVERY]
//! ```

mod checkpoint;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use checkpoint::Checkpoint;
use triton_proto::feed::v1::ChangeOp;
use triton_proto::vmapi::v1 as pb;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;
use triton_proto::vmapi::v1::watch_vms_event::Event;

/// A feed quiet this long is idle: what was applied is written down.
const IDLE: Duration = Duration::from_millis(200);
/// Pause before connecting again after the stream broke.
const RECONNECT: Duration = Duration::from_millis(200);

type Error = Box<dyn std::error::Error>;

struct Follower {
    path: PathBuf,
    position: u64,
    vms: BTreeMap<String, pb::Vm>,
    applied: Vec<u64>,
    /// Changes applied since the last checkpoint.
    pending: usize,
    every: usize,
    /// The snapshot being received, until its `snapshot_done`.
    fresh: Option<BTreeMap<String, pb::Vm>>,
}

impl Follower {
    fn checkpoint(&mut self) -> Result<(), Error> {
        Checkpoint {
            position: self.position,
            vms: self.vms.values().cloned().collect(),
            applied: self.applied.clone(),
        }
        .store(&self.path)?;
        self.pending = 0;
        Ok(())
    }

    /// Applies one event; false when the follower must start again from a snapshot.
    fn apply(&mut self, event: Event) -> Result<bool, Error> {
        match event {
            Event::Page(page) => {
                let fresh = self.fresh.get_or_insert_with(BTreeMap::new);
                fresh.extend(page.vms.into_iter().map(|vm| (vm.uuid.clone(), vm)));
            }
            Event::SnapshotDone(done) => match self.fresh.take() {
                Some(vms) => {
                    self.vms = vms;
                    self.position = done.position;
                    self.applied.push(done.position);
                    self.checkpoint()?;
                }
                None if done.position == self.position => {}
                None => {
                    return Err(format!(
                        "resumed from {} but the feed goes on from {}",
                        self.position, done.position
                    )
                    .into());
                }
            },
            Event::Change(change) => {
                if change.position <= self.position {
                    return Err(format!(
                        "change at {} after {}: applied twice or out of order",
                        change.position, self.position
                    )
                    .into());
                }
                match (change.op(), change.vm) {
                    (ChangeOp::Put, Some(vm)) => {
                        self.vms.insert(change.uuid, vm);
                    }
                    _ => {
                        self.vms.remove(&change.uuid);
                    }
                }
                self.position = change.position;
                self.applied.push(change.position);
                self.pending += 1;
                if self.pending >= self.every {
                    self.checkpoint()?;
                }
            }
            Event::Resync(resync) => {
                eprintln!("follow_vms: {}; starting again", resync.message);
                self.position = 0;
                self.fresh = None;
                return Ok(false);
            }
        }
        Ok(true)
    }
}

async fn follow(addr: String, mut f: Follower) -> Result<(), Error> {
    loop {
        let stream = match VmapiClient::connect(format!("http://{addr}")).await {
            Ok(mut client) => {
                client
                    .watch_vms(pb::WatchVmsRequest {
                        position: f.position,
                        owner_uuid: String::new(),
                    })
                    .await
            }
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(e) => {
                eprintln!("follow_vms: {e}");
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        f.fresh = None;
        loop {
            match tokio::time::timeout(IDLE, stream.message()).await {
                Err(_) => {
                    if f.pending > 0 {
                        f.checkpoint()?;
                    }
                }
                Ok(Ok(Some(pb::WatchVmsEvent { event: Some(event) }))) => {
                    if !f.apply(event)? {
                        break;
                    }
                }
                Ok(Ok(Some(_))) => return Err("an event without a kind".into()),
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    eprintln!("follow_vms: {e}");
                    break;
                }
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(path)) = (args.first(), args.get(1)) else {
        eprintln!("usage: follow_vms VMAPI_ADDR STATE_FILE [CHECKPOINT_EVERY]");
        std::process::exit(2);
    };
    let every = match args.get(2).map(|n| n.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("follow_vms: CHECKPOINT_EVERY must be a number above 0");
            std::process::exit(2);
        }
    };
    let path = PathBuf::from(path);
    let start = match Checkpoint::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("follow_vms: {e}");
            std::process::exit(2);
        }
    };
    let follower = Follower {
        path,
        position: start.position,
        vms: start
            .vms
            .into_iter()
            .map(|vm| (vm.uuid.clone(), vm))
            .collect(),
        applied: start.applied,
        pending: 0,
        every,
        fresh: None,
    };
    if let Err(e) = follow(addr.clone(), follower).await {
        eprintln!("follow_vms: {e}");
        std::process::exit(3);
    }
}
