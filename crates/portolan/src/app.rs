//! The answers (Triton's `lib/backend/moray.js`): each request to its ack, a lookup's
//! failure to a FATAL ack of the same type, logged.

use std::net::Ipv6Addr;
use std::sync::Arc;

use portolan_client::svp::{
    MAX_BODY_LEN, Request, Response, STATUS_LEN, Status, Underlay, VL3_TYPE_IP, VL3_TYPE_IPV6,
};

use crate::cache::Cache;
use crate::store::{LookupError, Store};

/// Portolan's logic over its store and cache.
#[derive(Debug, Clone)]
pub struct Portolan {
    store: Store,
    cache: Arc<Cache>,
}

impl Portolan {
    pub fn new(store: Store, cache: Cache) -> Portolan {
        Portolan {
            store,
            cache: Arc::new(cache),
        }
    }

    /// The answer to `req`.
    ///
    /// - PING: PONG (Moray is not asked).
    /// - VL2: OK with the node's underlay address and port, or NOTFOUND.
    /// - VL3: OK with MAC and underlay, NOTFOUND, or BADL3TYPE when the type is neither
    ///   1 (IPv4) nor 2 (IPv6) (Triton's Portolan does not check it).
    /// - LOG: OK with the requester's oldest entries that fit in `count` bytes (the
    ///   cached answers they name are dropped first); FATAL when no node (or more than
    ///   one) has the requester's address.
    /// - LOG_RM: OK once the entries are gone (ones already gone included).
    pub async fn answer(&self, req: &Request) -> Response {
        match self.lookup(req).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::warn!(
                    op = ?req.op(),
                    error = %triton_common::service::chain(&e),
                    "SVP lookup failed; answering FATAL"
                );
                Response::failure(req, Status::Fatal)
            }
        }
    }

    async fn lookup(&self, req: &Request) -> Result<Response, LookupError> {
        Ok(match req {
            Request::Ping => Response::Pong,
            Request::Vl2 { mac, vnet_id } => match self.vl2(*mac, *vnet_id).await? {
                Some(underlay) => Response::Vl2 {
                    status: Status::Ok,
                    underlay,
                },
                None => Response::failure(req, Status::NotFound),
            },
            Request::Vl3 {
                ip,
                l3_type,
                vnet_id,
            } => {
                if *l3_type != VL3_TYPE_IP && *l3_type != VL3_TYPE_IPV6 {
                    return Ok(Response::failure(req, Status::BadL3Type));
                }
                match self.vl3(*ip, *vnet_id).await? {
                    Some((mac, underlay)) => Response::Vl3 {
                        status: Status::Ok,
                        mac,
                        underlay,
                    },
                    None => Response::failure(req, Status::NotFound),
                }
            }
            Request::Log { count, ip } => {
                let entries = self
                    .store
                    .log(*ip, *count, MAX_BODY_LEN - STATUS_LEN)
                    .await?;
                self.cache.forget(&entries);
                Response::Log {
                    status: Status::Ok,
                    entries,
                }
            }
            Request::LogRm { ids } => {
                self.store.log_rm(ids).await?;
                Response::LogRm { status: Status::Ok }
            }
        })
    }

    async fn vl2(&self, mac: [u8; 6], vnet_id: u32) -> Result<Option<Underlay>, LookupError> {
        if let Some(answer) = self.cache.vl2(mac, vnet_id) {
            return Ok(answer);
        }
        let answer = self.store.vl2(mac, vnet_id).await?;
        self.cache.put_vl2(mac, vnet_id, answer);
        Ok(answer)
    }

    async fn vl3(
        &self,
        ip: Ipv6Addr,
        vnet_id: u32,
    ) -> Result<Option<([u8; 6], Underlay)>, LookupError> {
        if let Some(answer) = self.cache.vl3(ip, vnet_id) {
            return Ok(answer);
        }
        let answer = self.store.vl3(ip, vnet_id).await?;
        self.cache.put_vl3(ip, vnet_id, answer);
        Ok(answer)
    }
}
