//! The hickory request handler: one question in, the index's answer out.
//!
//! hickory's `Server` owns the sockets (UDP and TCP on port 53) and the wire format; this
//! handler only picks the records. It sits where hickory's `Catalog` would, because the
//! cluster zone is not a set of stored records but a view of the API's objects.

use std::sync::{Arc, RwLock};

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::records::{Answer, Index, Zone};

/// Answers every question from the shared index.
pub struct ClusterDns {
    pub zone: Zone,
    pub index: Arc<RwLock<Index>>,
}

impl ClusterDns {
    /// Records and response code for the request's (single) question.
    fn resolve(&self, request: &Request) -> (ResponseCode, Answer) {
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            return (ResponseCode::NotImp, Answer::Refused);
        }
        let Ok(info) = request.request_info() else {
            return (ResponseCode::FormErr, Answer::Refused);
        };
        let name = info.query.name().into();
        let qtype = info.query.query_type();
        let answer = match self.index.read() {
            Ok(index) => index.answer(&self.zone, &name, qtype),
            // A writer panicked mid-update: say so rather than answer from half a state.
            Err(_) => return (ResponseCode::ServFail, Answer::Refused),
        };
        let code = match &answer {
            Answer::Records { .. } | Answer::NoData => ResponseCode::NoError,
            Answer::NxDomain => ResponseCode::NXDomain,
            Answer::Refused => ResponseCode::Refused,
        };
        tracing::debug!(%name, ?qtype, ?code, "query");
        (code, answer)
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|asked| {
            let mut ours = Edns::new();
            ours.set_max_payload(asked.max_payload().max(512));
            ours
        });
        let (code, answer) = self.resolve(request);
        let mut metadata = Metadata::new(request.metadata.id, MessageType::Response, OpCode::Query);
        metadata.recursion_desired = request.metadata.recursion_desired;
        metadata.response_code = code;
        let soa = [self.zone.soa()];
        let no_records: &[Record] = &[];
        let (answers, authorities, additionals): (&[Record], &[Record], &[Record]) = match &answer {
            Answer::Records {
                answers,
                additionals,
            } => {
                metadata.authoritative = true;
                (answers, no_records, additionals)
            }
            Answer::NoData | Answer::NxDomain => {
                metadata.authoritative = true;
                (no_records, &soa, no_records)
            }
            Answer::Refused => (no_records, no_records, no_records),
        };
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answers.iter(),
            authorities.iter(),
            std::iter::empty(),
            additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "cannot send a DNS response");
                let mut failed =
                    Metadata::new(request.metadata.id, MessageType::Response, OpCode::Query);
                failed.response_code = ResponseCode::ServFail;
                hickory_server::proto::op::Header {
                    metadata: failed,
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}
