//! The local API: the requests and replies of the three Unix-socket servers, as plain types.
//!
//! - [`daemon`]: the node daemon's socket (`/run/overlay/overlay.sock`), for the `overlay` CLI
//!   and `overlay dev`.
//! - [`admin`]: the relay's admin socket (`<state>/admin.sock`), for the `overlay-relay` CLI
//!   and the relay's metrics.
//! - [`session`]: an `overlay dev` session's socket, for `overlay restart|stop|start|ps`.
//!
//! Each request is its own type and names its reply through [`Request`], so a client gets a
//! typed answer (a `StatusReply`, a `Vec<ServiceListing>`) and a server can only give the one
//! its request promises. On the wire (one JSON object per line each way; the transport is
//! `overlay_sys::local_api`) a request is its server's enum, `{"cmd": "<snake_case>", ...its
//! fields}`, and the answer is an [`Answer`]: `{"status": "ok", "data": <reply>}`, or
//! `{"status": "error" | "denied", "message": "<one sentence>"}`.

pub mod admin;
pub mod daemon;
pub mod session;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Display;

/// One request to a local server, with the type of its answer.
pub trait Request: Sized {
    /// The server's request enum: what goes on the wire.
    type Wire: Serialize + DeserializeOwned + Send + 'static;
    /// What the server answers when the request worked.
    type Reply: Serialize + DeserializeOwned;

    /// This request as its server's enum.
    fn into_wire(self) -> Self::Wire;

    /// The answer carrying `reply`.
    fn ok(&self, reply: Self::Reply) -> Answer {
        match serde_json::to_value(reply) {
            Ok(data) => Answer::Ok { data },
            Err(e) => Answer::Error {
                message: format!("the answer could not be encoded: {e}"),
            },
        }
    }

    /// The answer carrying `result`: the reply, or the error as one sentence (with its causes,
    /// for error types that print them with `{:#}`).
    fn answer<E: Display>(&self, result: Result<Self::Reply, E>) -> Answer {
        match result {
            Ok(reply) => self.ok(reply),
            Err(e) => Answer::Error {
                message: format!("{e:#}"),
            },
        }
    }
}

/// The answer line of every local server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Answer<T = serde_json::Value> {
    /// It worked: the request's reply.
    Ok {
        /// The reply.
        data: T,
    },
    /// The server understood the request and could not or would not do it.
    Error {
        /// Why, in one sentence (several lines for a failed build's output).
        message: String,
    },
    /// The server does not answer the connecting user (peer credentials).
    Denied {
        /// Whom it answers.
        message: String,
    },
}

/// Implements [`Request`] for the request types of one server: each travels as the variant of
/// `$wire` with its own name and is answered with the type after `=>`.
macro_rules! requests {
    ($wire:ident { $($request:ident => $reply:ty),* $(,)? }) => {
        $(
            impl $crate::api::Request for $request {
                type Wire = $wire;
                type Reply = $reply;
                fn into_wire(self) -> $wire {
                    $wire::$request(self)
                }
            }
        )*
    };
}
use requests;

#[cfg(test)]
mod tests;
