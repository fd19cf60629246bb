//! The answers (Triton's `lib/backend/moray.js`): each request to its ack, a lookup's
//! failure to a FATAL ack of the same type, logged.

use portolan_client::svp::{
    MAX_BODY_LEN, Request, Response, STATUS_LEN, Status, VL3_TYPE_IP, VL3_TYPE_IPV6,
};

use crate::store::{LookupError, Store};

/// Portolan's logic over its store.
#[derive(Debug, Clone)]
pub struct Portolan {
    store: Store,
}

impl Portolan {
    pub fn new(store: Store) -> Portolan {
        Portolan { store }
    }

    /// The answer to `req`.
    ///
    /// - PING: PONG (Moray is not asked).
    /// - VL2: OK with the node's underlay address and port, or NOTFOUND.
    /// - VL3: OK with MAC and underlay, NOTFOUND, or BADL3TYPE when the type is neither
    ///   1 (IPv4) nor 2 (IPv6) (Triton's Portolan does not check it).
    /// - LOG: OK with the requester's oldest entries that fit in `count` bytes; FATAL
    ///   when no node (or more than one) has the requester's address.
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
            Request::Vl2 { mac, vnet_id } => match self.store.vl2(*mac, *vnet_id).await? {
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
                match self.store.vl3(*ip, *vnet_id).await? {
                    Some((mac, underlay)) => Response::Vl3 {
                        status: Status::Ok,
                        mac,
                        underlay,
                    },
                    None => Response::failure(req, Status::NotFound),
                }
            }
            Request::Log { count, ip } => Response::Log {
                status: Status::Ok,
                entries: self
                    .store
                    .log(*ip, *count, MAX_BODY_LEN - STATUS_LEN)
                    .await?,
            },
            Request::LogRm { ids } => {
                self.store.log_rm(ids).await?;
                Response::LogRm { status: Status::Ok }
            }
        })
    }
}
