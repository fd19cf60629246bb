//! The task queue: CNAPI's tasks (`machine_create`, `machine_boot`, ...) run on the zone
//! backend, each with an id, a progress, a history and a final result.
//!
//! Tasks for one instance run one after another, in the order they were submitted: each
//! task waits for the one before it on the same instance (a chain of one-shot signals
//! set up when the task is submitted, so the order cannot depend on scheduling). Tasks
//! for different instances run concurrently.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::backend::{ImageSource, Instance, InstanceSpec, InstanceUpdate, Rollback, ZoneBackend};
use crate::error::{Error, Result};

/// Most tasks queued or running at once; beyond it submissions are refused, so a flood
/// of requests cannot grow memory without bound.
pub const MAX_ACTIVE_TASKS: usize = 1024;
/// Finished tasks kept for GetTask / ListTasks (CNAPI's task-history).
pub const MAX_FINISHED_TASKS: usize = 500;
/// Grace period of a shutdown that names none: SIGTERM, then SIGKILL after this.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// What a task does.
#[derive(Debug, Clone)]
pub enum TaskKind {
    MachineCreate {
        spec: Box<InstanceSpec>,
        image_source: Option<std::path::PathBuf>,
    },
    MachineBoot {
        uuid: Uuid,
    },
    MachineShutdown {
        uuid: Uuid,
        timeout: Option<Duration>,
    },
    MachineReboot {
        uuid: Uuid,
        timeout: Option<Duration>,
    },
    MachineUpdate {
        uuid: Uuid,
        update: Box<InstanceUpdate>,
    },
    MachineDestroy {
        uuid: Uuid,
    },
    MachineCreateSnapshot {
        uuid: Uuid,
        name: String,
    },
    MachineRollbackSnapshot {
        uuid: Uuid,
        name: String,
        boot: bool,
        timeout: Option<Duration>,
    },
    MachineDeleteSnapshot {
        uuid: Uuid,
        name: String,
    },
    ImageEnsurePresent {
        source: ImageSource,
    },
}

impl TaskKind {
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::MachineCreate { .. } => "machine_create",
            TaskKind::MachineBoot { .. } => "machine_boot",
            TaskKind::MachineShutdown { .. } => "machine_shutdown",
            TaskKind::MachineReboot { .. } => "machine_reboot",
            TaskKind::MachineUpdate { .. } => "machine_update",
            TaskKind::MachineDestroy { .. } => "machine_destroy",
            TaskKind::MachineCreateSnapshot { .. } => "machine_create_snapshot",
            TaskKind::MachineRollbackSnapshot { .. } => "machine_rollback_snapshot",
            TaskKind::MachineDeleteSnapshot { .. } => "machine_delete_snapshot",
            TaskKind::ImageEnsurePresent { .. } => "image_ensure_present",
        }
    }

    /// The instance (or image) whose tasks are serialized with this one.
    pub fn target(&self) -> Uuid {
        match self {
            TaskKind::MachineCreate { spec, .. } => spec.uuid,
            TaskKind::MachineBoot { uuid }
            | TaskKind::MachineShutdown { uuid, .. }
            | TaskKind::MachineReboot { uuid, .. }
            | TaskKind::MachineUpdate { uuid, .. }
            | TaskKind::MachineDestroy { uuid }
            | TaskKind::MachineCreateSnapshot { uuid, .. }
            | TaskKind::MachineRollbackSnapshot { uuid, .. }
            | TaskKind::MachineDeleteSnapshot { uuid, .. } => *uuid,
            TaskKind::ImageEnsurePresent { source } => source.image_uuid,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Active,
    Complete,
    Failure,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Active => "active",
            TaskStatus::Complete => "complete",
            TaskStatus::Failure => "failure",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    /// "progress", "finish" or "error".
    pub name: &'static str,
    pub timestamp: SystemTime,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub id: String,
    pub req_id: String,
    pub task: &'static str,
    pub target: Uuid,
    pub status: TaskStatus,
    pub progress: u32,
    pub history: Vec<TaskEvent>,
    /// Triton error name and message, on failure.
    pub error: Option<(String, String)>,
    /// The instance after a successful machine_* task (none after destroy).
    pub instance: Option<Instance>,
    pub created: SystemTime,
    pub finished: Option<SystemTime>,
}

impl TaskRecord {
    pub fn is_done(&self) -> bool {
        self.status != TaskStatus::Active
    }
}

struct Table {
    tasks: HashMap<String, watch::Sender<TaskRecord>>,
    /// Ids in submission order, for listing and for dropping the oldest finished.
    order: VecDeque<String>,
    active: usize,
    /// Per target: the last submitted task and the signal it sends when it ends.
    tails: HashMap<Uuid, (String, oneshot::Receiver<()>)>,
}

/// Runs tasks on a backend. Cheap to clone.
pub struct TaskQueue<B> {
    backend: Arc<B>,
    table: Arc<Mutex<Table>>,
}

impl<B> Clone for TaskQueue<B> {
    fn clone(&self) -> Self {
        TaskQueue {
            backend: self.backend.clone(),
            table: self.table.clone(),
        }
    }
}

impl<B: ZoneBackend> TaskQueue<B> {
    pub fn new(backend: Arc<B>) -> TaskQueue<B> {
        TaskQueue {
            backend,
            table: Arc::new(Mutex::new(Table {
                tasks: HashMap::new(),
                order: VecDeque::new(),
                active: 0,
                tails: HashMap::new(),
            })),
        }
    }

    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a task; it starts once every earlier task on its target has ended.
    pub fn submit(&self, req_id: &str, kind: TaskKind) -> Result<TaskRecord> {
        let id = Uuid::new_v4().to_string();
        let target = kind.target();
        let record = TaskRecord {
            id: id.clone(),
            req_id: req_id.to_string(),
            task: kind.name(),
            target,
            status: TaskStatus::Active,
            progress: 0,
            history: vec![TaskEvent {
                name: "progress",
                timestamp: SystemTime::now(),
                message: "queued".into(),
            }],
            error: None,
            instance: None,
            created: SystemTime::now(),
            finished: None,
        };
        let (done_tx, done_rx) = oneshot::channel();
        let previous = {
            let mut table = self.lock();
            if table.active >= MAX_ACTIVE_TASKS {
                return Err(Error::QueueFull(table.active));
            }
            table.active += 1;
            let (sender, _) = watch::channel(record.clone());
            table.tasks.insert(id.clone(), sender);
            table.order.push_back(id.clone());
            table
                .tails
                .insert(target, (id.clone(), done_rx))
                .map(|(_, rx)| rx)
        };
        let queue = self.clone();
        let span = tracing::info_span!("task", task_id = %id, task = kind.name(), %target, req_id);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Some(previous) = previous {
                    // Err means the earlier task's runner is gone: it ended too.
                    let _ = previous.await;
                }
                queue.progress(&id, 10, "started");
                let result = queue.execute(&id, kind).await;
                queue.finish(&id, target, result);
                let _ = done_tx.send(());
            },
            span,
        ));
        Ok(record)
    }

    async fn execute(&self, id: &str, kind: TaskKind) -> Result<Option<Instance>> {
        let b = &self.backend;
        match kind {
            TaskKind::MachineCreate { spec, image_source } => {
                if !b.image_present(spec.image_uuid).await? {
                    let Some(path) = image_source else {
                        return Err(Error::ImageNotFound(spec.image_uuid));
                    };
                    self.progress(id, 20, "installing image");
                    b.image_ensure_present(ImageSource {
                        image_uuid: spec.image_uuid,
                        path,
                    })
                    .await?;
                }
                self.progress(id, 50, "creating instance");
                b.create(*spec).await.map(Some)
            }
            TaskKind::MachineBoot { uuid } => b.boot(uuid).await.map(Some),
            TaskKind::MachineShutdown { uuid, timeout } => b
                .shutdown(uuid, timeout.unwrap_or(DEFAULT_STOP_TIMEOUT))
                .await
                .map(Some),
            TaskKind::MachineReboot { uuid, timeout } => b
                .reboot(uuid, timeout.unwrap_or(DEFAULT_STOP_TIMEOUT))
                .await
                .map(Some),
            TaskKind::MachineUpdate { uuid, update } => b.update(uuid, *update).await.map(Some),
            TaskKind::MachineDestroy { uuid } => b.destroy(uuid).await.map(|()| None),
            TaskKind::MachineCreateSnapshot { uuid, name } => {
                b.create_snapshot(uuid, name).await.map(Some)
            }
            TaskKind::MachineRollbackSnapshot {
                uuid,
                name,
                boot,
                timeout,
            } => {
                let timeout = timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
                let rollback = Rollback {
                    name,
                    boot,
                    timeout,
                };
                b.rollback_snapshot(uuid, rollback).await.map(Some)
            }
            TaskKind::MachineDeleteSnapshot { uuid, name } => {
                b.delete_snapshot(uuid, name).await.map(Some)
            }
            TaskKind::ImageEnsurePresent { source } => {
                b.image_ensure_present(source).await.map(|()| None)
            }
        }
    }

    fn progress(&self, id: &str, progress: u32, message: &str) {
        let table = self.lock();
        if let Some(sender) = table.tasks.get(id) {
            sender.send_modify(|t| {
                t.progress = progress;
                t.history.push(TaskEvent {
                    name: "progress",
                    timestamp: SystemTime::now(),
                    message: message.to_string(),
                });
            });
        }
    }

    fn finish(&self, id: &str, target: Uuid, result: Result<Option<Instance>>) {
        let mut table = self.lock();
        if let Some(sender) = table.tasks.get(id) {
            sender.send_modify(|t| {
                let now = SystemTime::now();
                t.finished = Some(now);
                match result {
                    Ok(instance) => {
                        t.status = TaskStatus::Complete;
                        t.progress = 100;
                        t.instance = instance;
                        t.history.push(TaskEvent {
                            name: "finish",
                            timestamp: now,
                            message: "done".into(),
                        });
                        tracing::info!("task complete");
                    }
                    Err(e) => {
                        let message = e.chain();
                        tracing::warn!(error = %message, "task failed");
                        t.status = TaskStatus::Failure;
                        t.error = Some((e.name().to_string(), message.clone()));
                        t.history.push(TaskEvent {
                            name: "error",
                            timestamp: now,
                            message,
                        });
                    }
                }
            });
        }
        table.active = table.active.saturating_sub(1);
        if table.tails.get(&target).is_some_and(|(last, _)| last == id) {
            table.tails.remove(&target);
        }
        // Forget the oldest finished tasks beyond the history limit.
        let finished = table.order.len() - table.active;
        if finished > MAX_FINISHED_TASKS {
            let mut excess = finished - MAX_FINISHED_TASKS;
            let Table { order, tasks, .. } = &mut *table;
            order.retain(|tid| {
                if excess > 0 && tasks.get(tid).is_some_and(|s| s.borrow().is_done()) {
                    tasks.remove(tid);
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    pub fn get(&self, id: &str) -> Result<TaskRecord> {
        let table = self.lock();
        table
            .tasks
            .get(id)
            .map(|s| s.borrow().clone())
            .ok_or_else(|| Error::TaskNotFound(id.to_string()))
    }

    /// The task once it has ended, or as it stands when `timeout` passes.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<TaskRecord> {
        let mut receiver = {
            let table = self.lock();
            table
                .tasks
                .get(id)
                .map(|s| s.subscribe())
                .ok_or_else(|| Error::TaskNotFound(id.to_string()))?
        };
        let done = tokio::time::timeout(timeout, receiver.wait_for(|t| t.is_done()))
            .await
            .ok()
            .and_then(|r| r.ok().map(|t| t.clone()));
        Ok(done.unwrap_or_else(|| receiver.borrow().clone()))
    }

    /// Tasks newest first.
    pub fn list(&self, limit: usize) -> Vec<TaskRecord> {
        let table = self.lock();
        table
            .order
            .iter()
            .rev()
            .take(limit)
            .filter_map(|id| table.tasks.get(id).map(|s| s.borrow().clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::InstanceState;
    use crate::sim::{SimBackend, SimConfig, SimDelays};

    fn spec(image: Uuid) -> InstanceSpec {
        InstanceSpec {
            image_uuid: image,
            ..crate::backend::tests::spec()
        }
    }

    fn queue(delay_ms: u64) -> TaskQueue<SimBackend> {
        let d = Duration::from_millis(delay_ms);
        TaskQueue::new(Arc::new(SimBackend::in_memory(SimConfig {
            delays: SimDelays {
                image: d,
                create: d,
                boot: d,
                shutdown: d,
                update: d,
                destroy: d,
                snapshot: d,
            },
            ..Default::default()
        })))
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_of_one_instance_run_in_submission_order() {
        let q = queue(100);
        let image = Uuid::new_v4();
        let s = spec(image);
        let uuid = s.uuid;
        let create = q
            .submit(
                "r1",
                TaskKind::MachineCreate {
                    spec: Box::new(s),
                    image_source: Some("/img.tar".into()),
                },
            )
            .unwrap();
        // Submitted at once after: each must see the state the previous one left.
        let stop = q
            .submit(
                "r2",
                TaskKind::MachineShutdown {
                    uuid,
                    timeout: None,
                },
            )
            .unwrap();
        let start = q.submit("r3", TaskKind::MachineBoot { uuid }).unwrap();
        let destroy = q.submit("r4", TaskKind::MachineDestroy { uuid }).unwrap();
        assert_eq!(create.status, TaskStatus::Active);

        let c = q.wait(&create.id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(c.status, TaskStatus::Complete, "{c:?}");
        assert_eq!(c.progress, 100);
        assert_eq!(c.instance.unwrap().state, InstanceState::Running);
        let names: Vec<&str> = c.history.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            names,
            [
                "queued",
                "started",
                "installing image",
                "creating instance",
                "done"
            ]
        );
        let s = q.wait(&stop.id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(s.instance.unwrap().state, InstanceState::Stopped);
        let b = q.wait(&start.id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(b.instance.unwrap().state, InstanceState::Running);
        let d = q.wait(&destroy.id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(d.status, TaskStatus::Complete);
        assert!(matches!(
            q.backend().get(uuid).await,
            Err(Error::VmNotFound(_))
        ));
        assert_eq!(q.list(10).len(), 4);
        assert_eq!(q.list(10)[0].id, destroy.id);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_carry_the_triton_error_name() {
        let q = queue(0);
        let t = q
            .submit(
                "r",
                TaskKind::MachineBoot {
                    uuid: Uuid::new_v4(),
                },
            )
            .unwrap();
        let t = q.wait(&t.id, Duration::from_secs(5)).await.unwrap();
        assert_eq!(t.status, TaskStatus::Failure);
        assert_eq!(t.error.unwrap().0, "VmNotFoundError");
        // Without an image source a missing image fails the create.
        let t = q
            .submit(
                "r",
                TaskKind::MachineCreate {
                    spec: Box::new(spec(Uuid::new_v4())),
                    image_source: None,
                },
            )
            .unwrap();
        let t = q.wait(&t.id, Duration::from_secs(5)).await.unwrap();
        assert_eq!(t.error.unwrap().0, "ImageNotFoundError");
        assert!(matches!(q.get("nope"), Err(Error::TaskNotFound(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn different_instances_run_concurrently_and_wait_can_time_out() {
        let q = queue(1000);
        let image = Uuid::new_v4();
        q.backend()
            .image_ensure_present(ImageSource {
                image_uuid: image,
                path: "/x".into(),
            })
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let ids: Vec<String> = (0..10)
            .map(|_| {
                q.submit(
                    "r",
                    TaskKind::MachineCreate {
                        spec: Box::new(spec(image)),
                        image_source: None,
                    },
                )
                .unwrap()
                .id
            })
            .collect();
        // Still running after 100 ms: wait answers the task as it stands.
        let early = q.wait(&ids[0], Duration::from_millis(100)).await.unwrap();
        assert_eq!(early.status, TaskStatus::Active);
        for id in &ids {
            let t = q.wait(id, Duration::from_secs(60)).await.unwrap();
            assert_eq!(t.status, TaskStatus::Complete);
        }
        // create + boot = 2 s each; ten in a row would take 20 s.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
