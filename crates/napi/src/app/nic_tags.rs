//! Nic tags: create, read, list, update and delete; the shared conditional delete.

use moray_client::EtagCondition;
use moray_client::typed::RetryPolicy;
use triton_proto::napi::v1 as proto;

use crate::error::{Error, FieldError, Result};
use crate::model::{MTU_DEFAULT, Network, NicTag};
use crate::store::{self, NETWORKS, NIC_TAGS, Stored};
use crate::validate::{self, Checks};
use moray_client::filter::Filter;

use super::{Napi, gave_up, new_uuid, not_found, one, paged};

impl Napi {
    pub async fn create_nic_tag(&self, req: proto::CreateNicTagRequest) -> Result<NicTag> {
        let mut c = Checks::new();
        let name = c.take(validate::nic_tag_name("name", &req.name));
        let mtu = c.take(validate::nic_tag_mtu("mtu", req.mtu.unwrap_or(MTU_DEFAULT)));
        c.finish()?;
        let (Some(name), Some(mtu)) = (name, mtu) else {
            return Err(Error::invalid("name", "invalid"));
        };
        let tag = NicTag {
            name: name.clone(),
            uuid: new_uuid(),
            mtu,
        };
        match self
            .store
            .put(NIC_TAGS, &name, &tag, EtagCondition::MustNotExist)
            .await?
        {
            Ok(_) => Ok(tag),
            Err(e) if store::conflict(&e).is_some() => {
                Err(Error::InvalidParameters(vec![FieldError::duplicate(
                    "name",
                    format!("nic tag {name:?} already exists"),
                )]))
            }
            Err(e) => Err(Error::moray("putObject napi_nic_tags")(e)),
        }
    }

    pub(super) async fn nic_tag(&self, name: &str) -> Result<Option<Stored<NicTag>>> {
        if validate::nic_tag_name("name", name).is_err() {
            return Ok(None);
        }
        self.store.get(NIC_TAGS, name).await
    }

    /// The nic tag `name`, or ResourceNotFound.
    async fn existing_nic_tag(&self, name: &str) -> Result<Stored<NicTag>> {
        self.nic_tag(name)
            .await?
            .ok_or_else(|| not_found("nic tag", name))
    }

    pub async fn get_nic_tag(&self, name: &str) -> Result<NicTag> {
        Ok(self.existing_nic_tag(name).await?.value)
    }

    pub async fn list_nic_tags(&self, req: proto::ListNicTagsRequest) -> Result<Vec<NicTag>> {
        let limit = validate::limit("limit", req.limit).map_err(one)?;
        let found = self
            .store
            .find::<NicTag>(NIC_TAGS, "(name=*)", &paged(limit, req.offset, "name"))
            .await?;
        Ok(found.into_iter().map(|s| s.value).collect())
    }

    pub async fn update_nic_tag(&self, req: proto::UpdateNicTagRequest) -> Result<NicTag> {
        let mut tries = RetryPolicy::DEFAULT.start();
        while tries.next().await {
            let stored = self.existing_nic_tag(&req.name).await?;
            let mut tag = stored.value;
            if let Some(mtu) = req.mtu {
                let mtu = validate::nic_tag_mtu("mtu", mtu).map_err(one)?;
                let networks = self
                    .store
                    .find_all::<Network>(
                        NETWORKS,
                        &Filter::eq("nic_tag", &tag.name).to_string(),
                        "uuid",
                    )
                    .await?;
                if let Some(n) = networks.iter().find(|n| n.value.mtu > mtu) {
                    return Err(Error::invalid(
                        "mtu",
                        format!(
                            "nic_tag mtu update must support existing networks: network {} has mtu {}",
                            n.value.uuid, n.value.mtu
                        ),
                    ));
                }
                tag.mtu = mtu;
            }
            if self
                .store
                .replace(NIC_TAGS, &tag.name, &tag, stored.etag)
                .await?
            {
                return Ok(tag);
            }
        }
        Err(gave_up(format!("update nic tag {}", req.name)))
    }

    pub async fn delete_nic_tag(&self, name: &str) -> Result<()> {
        let stored = self.existing_nic_tag(name).await?;
        self.store
            .refuse_in_use(NETWORKS, "nic_tag", name, |n: Network| {
                format!(
                    "nic tag {name:?} is used by network {} ({})",
                    n.uuid, n.name
                )
            })
            .await?;
        self.delete(NIC_TAGS, name, EtagCondition::Is(stored.etag), "nic tag")
            .await
    }

    pub(super) async fn delete(
        &self,
        bucket: &str,
        key: &str,
        etag: EtagCondition,
        kind: &'static str,
    ) -> Result<()> {
        match self.store.delete(bucket, key, etag).await {
            Ok(()) => Ok(()),
            Err(e) if e.name() == "ObjectNotFoundError" => Err(not_found(kind, key)),
            Err(e) if store::conflict(&e).is_some() => Err(Error::Contention {
                what: format!("delete {kind} {key}"),
                attempts: 1,
            }),
            Err(e) => Err(Error::moray(format!("deleteObject {bucket}"))(e)),
        }
    }
}
