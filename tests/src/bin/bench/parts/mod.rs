//! One module per bench part; [`run`] dispatches by name.

mod capture;
mod dataplane;
mod dns;
mod flood;
mod gateway;
mod intercept;
mod join;
mod registry;
mod restart;
mod scale;
mod storm;
mod tcp;

use crate::ctx::Ctx;

pub fn run(ctx: &Ctx, part: &str) {
    match part {
        "dataplane" => dataplane::run(ctx),
        "join" => join::run(ctx),
        "dns" => dns::run(ctx),
        "registry" => registry::run(ctx),
        "gateway" => gateway::run(ctx),
        "restart" => restart::run(ctx),
        "scale" => scale::run(ctx),
        "flood" => flood::run(ctx),
        "tcp" => tcp::run(ctx),
        "storm" => storm::run(ctx),
        "capture" => capture::run(ctx),
        "intercept" => intercept::run(ctx),
        other => ctx.fail(other, "no such part"),
    }
}
