//! Part `restart` (being ported).

pub fn run(ctx: &crate::ctx::Ctx) {
    ctx.fail("restart", "not ported yet");
}
