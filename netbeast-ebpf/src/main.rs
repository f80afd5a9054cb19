//! netbeast's kernel side. This file holds only the entry points; each
//! feature lives in its own module with the maps it owns.
#![no_std]
#![no_main]

mod classify;
mod csum;
mod parse;
mod pipeline;
mod reject;
mod route;
mod stats;

use aya_ebpf::{macros::xdp, programs::XdpContext};

/// XDP ingress: INPUT and FORWARD filter chains.
#[xdp]
pub fn netbeast_xdp(ctx: XdpContext) -> u32 {
    pipeline::ingress(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
