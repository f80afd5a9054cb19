//! Internet checksum helpers (RFC 1071), written so the verifier can follow
//! every access.

/// Folds a 32-bit one's-complement sum into 16 bits.
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// True when a TCP or UDP checksum field `check` holds only the
/// pseudo-header's sum `pseudo`: a segment whose checksum is left to
/// transmit offload (CHECKSUM_PARTIAL, what a veth peer's sockets send).
/// Its sum is completed later over the bytes as they are then, so a
/// rewrite must leave it (or, for a new length, write the new
/// pseudo-header's sum) instead of adjusting it. A complete checksum that
/// happens to equal it (one in 65,536) is taken for one too.
#[inline(always)]
pub fn partial(check: u16, pseudo: u64) -> bool {
    let p = fold(pseudo);
    check == p || (check == 0 && p == 0xffff) || (check == 0xffff && p == 0)
}

/// One's-complement update of checksum `check` for a 16-bit word going
/// from `old` to `new` (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), the
/// kernel's `csum_replace2`).
#[inline(always)]
pub fn replace(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u64 + (!old) as u64 + new as u64)
}

/// Sums `len` bytes starting at `start` as big-endian 16-bit words, never
/// reading at or past `end`. `MAX` bounds the loop for the verifier.
#[inline(always)]
pub fn sum_bytes<const MAX: usize>(start: usize, len: usize, end: usize) -> u64 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < MAX {
        if i + 2 > len {
            break;
        }
        let p = start + i;
        if p + 2 > end {
            return sum;
        }
        // SAFETY: bounds checked against `end` just above.
        let word = unsafe { u16::from_be(*(p as *const u16)) };
        sum += word as u64;
        i += 2;
    }
    if len & 1 == 1 && i < MAX {
        let p = start + i;
        if p < end {
            // SAFETY: bounds checked against `end`.
            sum += (unsafe { *(p as *const u8) } as u64) << 8;
        }
    }
    sum
}
