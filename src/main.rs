//! `ringrelay`: the command line (spec section 2). Nothing else lives here.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {}
