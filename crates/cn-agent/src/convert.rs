//! Between the wire (`triton.cnagent.v1`) and the backend's types. Bad input is an
//! [`Error::Invalid`] naming the field.

use std::net::Ipv4Addr;
use std::time::{Duration, UNIX_EPOCH};

use triton_common::copy_fields;
use triton_common::time::rfc3339;
use triton_proto::cnagent::v1 as pb;
use uuid::Uuid;

use crate::backend::{
    ImageSource, Instance, InstanceSpec, InstanceUpdate, NicSpec, parse_netmask,
    validate_snapshot_name,
};
use crate::error::{Error, Result};
use crate::tasks::{TaskKind, TaskRecord};

pub fn parse_uuid(field: &str, text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| Error::invalid(field, format!("{text:?} is not a UUID")))
}

fn parse_ip(field: &str, text: &str) -> Result<Option<Ipv4Addr>> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| Error::invalid(field, format!("{text:?} is not an IPv4 address")))
}

pub fn nic_from_pb(field: &str, nic: &pb::Nic) -> Result<NicSpec> {
    let prefix_len = parse_netmask(&nic.netmask).ok_or_else(|| {
        Error::invalid(
            &format!("{field}.netmask"),
            format!("{:?} is not a netmask", nic.netmask),
        )
    })?;
    let resolvers = nic
        .resolvers
        .iter()
        .enumerate()
        .map(|(i, r)| {
            parse_ip(&format!("{field}.resolvers[{i}]"), r)?
                .ok_or_else(|| Error::invalid(&format!("{field}.resolvers[{i}]"), "is empty"))
        })
        .collect::<Result<Vec<_>>>()?;
    let vlan_id = u16::try_from(nic.vlan_id)
        .ok()
        .filter(|v| *v < 4095)
        .ok_or_else(|| Error::invalid(&format!("{field}.vlan_id"), "must be below 4095"))?;
    Ok(copy_fields!(nic => NicSpec [
        interface, nic_tag, mtu, primary, vnet_id, internet_nat, network_uuid,
    ] {
        mac: nic.mac.to_ascii_lowercase(),
        ip: parse_ip(&format!("{field}.ip"), &nic.ip)?,
        prefix_len,
        gateway: parse_ip(&format!("{field}.gateway"), &nic.gateway)?,
        resolvers,
        vlan_id,
    }))
}

pub fn nic_to_pb(nic: &NicSpec) -> pb::Nic {
    copy_fields!(nic => pb::Nic [
        interface, mac, nic_tag, mtu, primary, vnet_id, internet_nat, network_uuid,
    ] {
        ip: nic.ip.map(|i| i.to_string()).unwrap_or_default(),
        netmask: nic.prefix_len.to_string(),
        gateway: nic.gateway.map(|g| g.to_string()).unwrap_or_default(),
        resolvers: nic.resolvers.iter().map(|r| r.to_string()).collect(),
        vlan_id: u32::from(nic.vlan_id),
    })
}

pub fn spec_from_pb(spec: &pb::InstanceSpec) -> Result<InstanceSpec> {
    let nics = spec
        .nics
        .iter()
        .enumerate()
        .map(|(i, n)| nic_from_pb(&format!("nics[{i}]"), n))
        .collect::<Result<Vec<_>>>()?;
    let out = copy_fields!(spec => InstanceSpec [
        owner_uuid, alias, brand, ram, cpu_cap, quota, max_lwps, init, autoboot, billing_id,
    ] collect [customer_metadata, internal_metadata, tags] {
        uuid: parse_uuid("uuid", &spec.uuid)?,
        hostname: if spec.hostname.is_empty() {
            spec.uuid.clone()
        } else {
            spec.hostname.clone()
        },
        image_uuid: parse_uuid("image_uuid", &spec.image_uuid)?,
        nics,
    });
    out.validate()?;
    Ok(out)
}

pub fn spec_to_pb(spec: &InstanceSpec) -> pb::InstanceSpec {
    copy_fields!(spec => pb::InstanceSpec [
        owner_uuid, alias, hostname, brand, ram, cpu_cap, quota, max_lwps, init, autoboot,
        billing_id,
    ] collect [customer_metadata, internal_metadata, tags] {
        uuid: spec.uuid.to_string(),
        image_uuid: spec.image_uuid.to_string(),
        nics: spec.nics.iter().map(nic_to_pb).collect(),
    })
}

pub fn instance_to_pb(i: &Instance) -> pb::Instance {
    pb::Instance {
        spec: Some(spec_to_pb(&i.spec)),
        state: i.state.as_str().to_string(),
        pid: i.pid.unwrap_or(0),
        last_boot: i.last_boot.unwrap_or(0),
        last_modified: rfc3339(UNIX_EPOCH + Duration::from_secs(i.last_modified)),
        snapshots: i
            .snapshots
            .iter()
            .map(|s| pb::Snapshot {
                name: s.name.clone(),
                created: rfc3339(UNIX_EPOCH + Duration::from_secs(s.created)),
            })
            .collect(),
    }
}

fn timeout(seconds: u32) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)))
}

pub fn task_from_pb(req: &pb::CreateTaskRequest) -> Result<TaskKind> {
    use pb::create_task_request::Task;
    let task = req
        .task
        .as_ref()
        .ok_or_else(|| Error::invalid("task", "is required"))?;
    Ok(match task {
        Task::MachineCreate(c) => {
            let spec = c
                .spec
                .as_ref()
                .ok_or_else(|| Error::invalid("machine_create.spec", "is required"))?;
            TaskKind::MachineCreate {
                spec: Box::new(spec_from_pb(spec)?),
                image_source: (!c.image_source.is_empty()).then(|| c.image_source.clone().into()),
            }
        }
        Task::MachineBoot(b) => TaskKind::MachineBoot {
            uuid: parse_uuid("machine_boot.uuid", &b.uuid)?,
        },
        Task::MachineShutdown(s) => TaskKind::MachineShutdown {
            uuid: parse_uuid("machine_shutdown.uuid", &s.uuid)?,
            timeout: timeout(s.timeout_seconds),
        },
        Task::MachineReboot(r) => TaskKind::MachineReboot {
            uuid: parse_uuid("machine_reboot.uuid", &r.uuid)?,
            timeout: timeout(r.timeout_seconds),
        },
        Task::MachineUpdate(u) => TaskKind::MachineUpdate {
            uuid: parse_uuid("machine_update.uuid", &u.uuid)?,
            update: Box::new(InstanceUpdate {
                ram: u.ram,
                cpu_cap: u.cpu_cap,
                quota: u.quota,
                max_lwps: u.max_lwps,
                alias: u.alias.clone(),
                hostname: u.hostname.clone(),
                add_nics: u
                    .add_nics
                    .iter()
                    .enumerate()
                    .map(|(i, n)| nic_from_pb(&format!("machine_update.add_nics[{i}]"), n))
                    .collect::<Result<_>>()?,
                remove_nics: u
                    .remove_nics
                    .iter()
                    .map(|m| m.to_ascii_lowercase())
                    .collect(),
            }),
        },
        Task::MachineDestroy(d) => TaskKind::MachineDestroy {
            uuid: parse_uuid("machine_destroy.uuid", &d.uuid)?,
        },
        Task::MachineCreateSnapshot(c) => TaskKind::MachineCreateSnapshot {
            uuid: parse_uuid("machine_create_snapshot.uuid", &c.uuid)?,
            name: snapshot_name(&c.name)?,
        },
        Task::MachineRollbackSnapshot(r) => TaskKind::MachineRollbackSnapshot {
            uuid: parse_uuid("machine_rollback_snapshot.uuid", &r.uuid)?,
            name: snapshot_name(&r.name)?,
            boot: r.boot,
            timeout: timeout(r.timeout_seconds),
        },
        Task::MachineDeleteSnapshot(d) => TaskKind::MachineDeleteSnapshot {
            uuid: parse_uuid("machine_delete_snapshot.uuid", &d.uuid)?,
            name: snapshot_name(&d.name)?,
        },
        Task::ImageEnsurePresent(i) => {
            if i.source.is_empty() {
                return Err(Error::invalid("image_ensure_present.source", "is required"));
            }
            TaskKind::ImageEnsurePresent {
                source: ImageSource {
                    image_uuid: parse_uuid("image_ensure_present.image_uuid", &i.image_uuid)?,
                    path: i.source.clone().into(),
                },
            }
        }
    })
}

/// A snapshot name from the wire, checked at once so a bad one never becomes a task.
fn snapshot_name(name: &str) -> Result<String> {
    validate_snapshot_name(name)?;
    Ok(name.to_string())
}

pub fn task_to_pb(t: &TaskRecord, server_uuid: Uuid) -> pb::Task {
    let (error_name, error_message) = t.error.clone().unwrap_or_default();
    pb::Task {
        id: t.id.clone(),
        req_id: t.req_id.clone(),
        task: t.task.to_string(),
        server_uuid: server_uuid.to_string(),
        target_uuid: t.target.to_string(),
        status: t.status.as_str().to_string(),
        progress: t.progress,
        history: t
            .history
            .iter()
            .map(|e| pb::TaskEvent {
                name: e.name.to_string(),
                timestamp: rfc3339(e.timestamp),
                message: e.message.clone(),
            })
            .collect(),
        error_name,
        error_message,
        instance: t.instance.as_ref().map(instance_to_pb),
        created: rfc3339(t.created),
        finished: t.finished.map(rfc3339).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_wire_specs_name_the_field() {
        let good = pb::InstanceSpec {
            uuid: Uuid::new_v4().to_string(),
            image_uuid: Uuid::new_v4().to_string(),
            ram: 64,
            ..Default::default()
        };
        let bad_ip = vec![pb::Nic {
            ip: "10.0.0.300".into(),
            nic_tag: "admin".into(),
            ..Default::default()
        }];
        for (spec, field) in [
            (
                pb::InstanceSpec {
                    image_uuid: "not-a-uuid".into(),
                    ..good.clone()
                },
                "image_uuid",
            ),
            (
                pb::InstanceSpec {
                    nics: bad_ip,
                    ..good.clone()
                },
                "nics[0].ip",
            ),
        ] {
            let err = spec_from_pb(&spec).unwrap_err();
            assert!(
                matches!(err, Error::Invalid { field: ref f, .. } if f == field),
                "{field}: {err}"
            );
        }
        spec_from_pb(&good).expect("the spec the bad ones start from is good");
    }

    #[test]
    fn bad_snapshot_names_never_become_tasks() {
        use pb::create_task_request::Task;
        let uuid = Uuid::new_v4().to_string();
        for name in ["", "a b", "../x", "..", &"n".repeat(65)] {
            let req = pb::CreateTaskRequest {
                task: Some(Task::MachineCreateSnapshot(pb::MachineCreateSnapshot {
                    uuid: uuid.clone(),
                    name: name.to_string(),
                })),
                ..Default::default()
            };
            let err = task_from_pb(&req).unwrap_err();
            assert!(
                matches!(err, Error::Invalid { ref field, .. } if field == "name"),
                "{name:?}: {err}"
            );
        }
        let req = pb::CreateTaskRequest {
            task: Some(Task::MachineRollbackSnapshot(pb::MachineRollbackSnapshot {
                uuid,
                name: "ok-1.2_3".into(),
                boot: true,
                timeout_seconds: 5,
            })),
            ..Default::default()
        };
        assert!(matches!(
            task_from_pb(&req).unwrap(),
            TaskKind::MachineRollbackSnapshot { boot: true, timeout: Some(t), .. } if t == Duration::from_secs(5)
        ));
    }

    #[test]
    fn specs_round_trip() {
        let spec = pb::InstanceSpec {
            uuid: Uuid::new_v4().to_string(),
            image_uuid: Uuid::new_v4().to_string(),
            hostname: "web".into(),
            ram: 64,
            nics: vec![pb::Nic {
                interface: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                ip: "10.0.0.5".into(),
                netmask: "255.255.255.0".into(),
                gateway: "10.0.0.1".into(),
                resolvers: vec!["10.0.0.1".into()],
                nic_tag: "admin".into(),
                primary: true,
                ..Default::default()
            }],
            autoboot: true,
            ..Default::default()
        };
        let domain = spec_from_pb(&spec).unwrap();
        assert_eq!(domain.nics[0].prefix_len, 24);
        let back = spec_to_pb(&domain);
        assert_eq!(back.nics[0].netmask, "24");
        assert_eq!(spec_from_pb(&back).unwrap(), domain);
    }
}
