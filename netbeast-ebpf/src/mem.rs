//! Zeroing and copying that stay plain instructions.
//!
//! On the BPF target LLVM turns a struct copy, `mem::zeroed()`, a
//! `Default` struct and even two adjacent zero stores into calls to
//! `memcpy`, `memmove` or `memset`, which aya-ebpf provides as byte loops:
//! four to five instructions a byte, so a conntrack entry (72 bytes, 120
//! for IPv6) copied out per packet cost ~400–600 instructions and the
//! FIB's 64-byte parameters ~300. These helpers move whole words with
//! volatile accesses, which LLVM neither merges into such calls nor turns
//! back into loops (`llvm-objdump -dr` of the object shows what is left:
//! the `memset`/`memmove` relocations).

use core::{
    mem::{align_of, size_of},
    ptr::{read_volatile, write_volatile},
};

/// The widest word (8, 4, 2 or 1 bytes) that divides `T`'s size and
/// that its alignment allows.
const fn unit<T>() -> usize {
    let (size, align) = (size_of::<T>(), align_of::<T>());
    if align >= 8 && size.is_multiple_of(8) {
        8
    } else if align >= 4 && size.is_multiple_of(4) {
        4
    } else if align >= 2 && size.is_multiple_of(2) {
        2
    } else {
        1
    }
}

/// Sets every byte of `*p` to zero, a word at a time.
///
/// # Safety
/// `p` is valid for writes of a `T` and aligned for it.
#[inline(always)]
pub unsafe fn zero<T>(p: *mut T) {
    let n = size_of::<T>();
    // SAFETY (each arm): the words cover `*p` exactly; the caller gives a
    // valid, aligned `p`, and `unit` keeps each word aligned.
    unsafe {
        match unit::<T>() {
            8 => (0..n / 8).for_each(|i| write_volatile((p as *mut u64).add(i), 0)),
            4 => (0..n / 4).for_each(|i| write_volatile((p as *mut u32).add(i), 0)),
            2 => (0..n / 2).for_each(|i| write_volatile((p as *mut u16).add(i), 0)),
            _ => (0..n).for_each(|i| write_volatile((p as *mut u8).add(i), 0)),
        }
    }
}

/// Copies `*src` into `*dst`, a word at a time (the two must not
/// overlap).
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of a `T`, both aligned.
#[inline(always)]
pub unsafe fn copy<T>(dst: *mut T, src: *const T) {
    let n = size_of::<T>();
    // SAFETY: as in `zero`, for both pointers.
    unsafe {
        match unit::<T>() {
            8 => (0..n / 8).for_each(|i| {
                write_volatile(
                    (dst as *mut u64).add(i),
                    read_volatile((src as *const u64).add(i)),
                )
            }),
            4 => (0..n / 4).for_each(|i| {
                write_volatile(
                    (dst as *mut u32).add(i),
                    read_volatile((src as *const u32).add(i)),
                )
            }),
            2 => (0..n / 2).for_each(|i| {
                write_volatile(
                    (dst as *mut u16).add(i),
                    read_volatile((src as *const u16).add(i)),
                )
            }),
            _ => (0..n).for_each(|i| {
                write_volatile(
                    (dst as *mut u8).add(i),
                    read_volatile((src as *const u8).add(i)),
                )
            }),
        }
    }
}

/// Writes `bytes` at `dst` one byte at a time (no alignment needed: a
/// MAC address into a frame).
///
/// # Safety
/// `dst` is valid for writes of `N` bytes.
#[inline(always)]
pub unsafe fn write_bytes<const N: usize>(dst: *mut u8, bytes: [u8; N]) {
    // SAFETY: the caller gives `N` writable bytes at `dst`.
    unsafe { (0..N).for_each(|i| write_volatile(dst.add(i), bytes[i])) }
}

/// `slot` written all zero and returned as a `T`: `mem::zeroed()` for a
/// value that stays where it is (on the stack), without the byte loop.
///
/// # Safety
/// All-zero bytes are a valid `T` (plain integers).
#[inline(always)]
pub unsafe fn zeroed<T>(slot: &mut core::mem::MaybeUninit<T>) -> &mut T {
    // SAFETY: `slot` is valid and aligned for a `T`, and every byte of it
    // is then written; the caller vouches that zero bytes are a `T`.
    unsafe {
        zero(slot.as_mut_ptr());
        slot.assume_init_mut()
    }
}
