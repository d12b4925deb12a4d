//! Application traffic understood: the capture behind the traffic inspector, HTTP/1 framing
//! and WebSocket frames (the relay's front reads them too).

pub mod capture;
pub mod http1;
pub mod wsframe;
