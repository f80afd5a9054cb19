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
