//! Zone transfers (reference 1.10): what AXFR and IXFR send, as a sequence of messages
//! built one at a time, so a transfer of a large zone holds one message in memory.
//!
//! - AXFR: the SOA, every record (the apex NS set first), the SOA again.
//! - IXFR (RFC 1995) from serial `s`: the current SOA, then for each retained step from
//!   `s` on its old SOA, the records it removed, its new SOA and the records it added,
//!   and the current SOA to close. A serial at or past the current one gets the current
//!   SOA alone (nothing to send); a serial the journal does not reach gets an AXFR-shaped
//!   answer (which RFC 1995 allows), as Triton does.
//! - A message holds at most `MAX_ANSWERS` records (Triton flushes at 500) and never more
//!   than a TCP message's 65535 bytes.

use std::borrow::Cow;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::Record;

use super::answer::{TCP_MAX, encode_within, response_to};
use crate::zone::{Change, Zone, Zones, soa_record};

/// Records per transfer message.
pub const MAX_ANSWERS: usize = 500;

/// What a transfer sends.
#[derive(Debug)]
pub enum Plan {
    /// The whole zone.
    Axfr,
    /// These steps, oldest first.
    Ixfr(Vec<Change>),
    /// The client is current: the SOA alone.
    UpToDate,
}

impl Plan {
    /// The plan for a request: AXFR (`ixfr_from` None), or IXFR from a serial.
    pub fn for_request(zones: &Zones, zone: &Zone, ixfr_from: Option<u32>) -> Plan {
        let Some(from) = ixfr_from else {
            return Plan::Axfr;
        };
        if !serial_lt(from, zone.serial) {
            return Plan::UpToDate;
        }
        match zones.changes_since(&zone.origin, from) {
            // The zone moved on between the snapshot and now: the snapshot's AXFR is
            // consistent.
            Some(steps) if steps.last().is_some_and(|c| c.to != zone.serial) => Plan::Axfr,
            Some(steps) if steps.is_empty() => Plan::UpToDate,
            Some(steps) => Plan::Ixfr(steps),
            None => Plan::Axfr,
        }
    }

    /// The transfer's kind as the peers table counts it.
    pub fn is_incremental(&self) -> bool {
        !matches!(self, Plan::Axfr)
    }
}

/// RFC 1982 serial arithmetic: `a` is before `b`.
pub fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// Every record a transfer sends, in order.
pub fn records<'a>(
    zone: &'a Zone,
    plan: &'a Plan,
) -> Box<dyn Iterator<Item = Cow<'a, Record>> + Send + 'a> {
    let soa = || Cow::Owned(zone.soa_record());
    match plan {
        Plan::UpToDate => Box::new(std::iter::once(soa())),
        Plan::Axfr => Box::new(
            std::iter::once(soa())
                .chain(zone.iter().map(Cow::Borrowed))
                .chain(std::iter::once(soa())),
        ),
        Plan::Ixfr(steps) => Box::new(
            std::iter::once(soa())
                .chain(steps.iter().flat_map(move |step| {
                    let at = move |serial| Cow::Owned(soa_record(&zone.origin, &zone.soa, serial));
                    std::iter::once(at(step.from))
                        .chain(step.removed.iter().map(Cow::Borrowed))
                        .chain(std::iter::once(at(step.to)))
                        .chain(step.added.iter().map(Cow::Borrowed))
                }))
                .chain(std::iter::once(soa())),
        ),
    }
}

/// Builds a transfer's messages from its records, one at a time.
pub struct Messages<'a> {
    request: &'a Message,
    pending: Vec<Record>,
    first: bool,
}

impl<'a> Messages<'a> {
    pub fn new(request: &'a Message) -> Messages<'a> {
        Messages {
            request,
            pending: Vec::with_capacity(MAX_ANSWERS),
            first: true,
        }
    }

    /// Adds a record; gives the messages to send once a message is full.
    pub fn push(&mut self, record: Record) -> Vec<Vec<u8>> {
        self.pending.push(record);
        if self.pending.len() >= MAX_ANSWERS {
            self.flush()
        } else {
            Vec::new()
        }
    }

    /// The last messages (the records not yet sent).
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.flush()
    }

    fn flush(&mut self) -> Vec<Vec<u8>> {
        let records = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        self.encode(records, &mut out);
        out
    }

    /// One message of `records`, or more when they do not fit in 64 KiB.
    fn encode(&mut self, records: Vec<Record>, out: &mut Vec<Vec<u8>>) {
        if records.is_empty() {
            return;
        }
        let mut message = response_to(self.request);
        message.set_authoritative(true);
        message.set_response_code(ResponseCode::NoError);
        if !self.first {
            // The question is in the first message only (RFC 5936 2.2.1).
            message.take_queries();
        }
        let count = records.len();
        message.insert_answers(records);
        match message.to_vec() {
            Ok(bytes) if bytes.len() <= TCP_MAX => {
                self.first = false;
                out.push(bytes);
            }
            Ok(_) if count > 1 => {
                let mut records = message.take_answers();
                let rest = records.split_off(count / 2);
                self.encode(records, out);
                self.encode(rest, out);
            }
            Ok(_) | Err(_) => {
                // One record that cannot be encoded in a message: skipped, and logged;
                // the secondary notices nothing but that record's absence.
                tracing::warn!(records = ?message.answers(), "a transfer record does not fit a message; left out");
            }
        }
    }
}

/// A refusal (REFUSED) of a transfer request.
pub fn refused(request: &Message) -> Option<Vec<u8>> {
    let mut response = response_to(request);
    response.set_response_code(ResponseCode::Refused);
    encode_within(&mut response, TCP_MAX)
}

/// AXFR over UDP: no answer, TC set, so the client asks again on TCP.
pub fn truncated(request: &Message) -> Option<Vec<u8>> {
    let mut response = response_to(request);
    response.set_authoritative(true);
    response.set_truncated(true);
    encode_within(&mut response, TCP_MAX)
}

/// Every message of a transfer, at once (tests and the fuzz target; the server streams).
pub fn all_messages(request: &Message, zone: &Zone, plan: &Plan) -> Vec<Vec<u8>> {
    let mut messages = Messages::new(request);
    let mut out = Vec::new();
    for r in records(zone, plan) {
        out.extend(messages.push(r.into_owned()));
    }
    out.extend(messages.finish());
    out
}
