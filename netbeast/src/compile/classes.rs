//! Rule bit vectors and their deduplication into class ids.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use netbeast_common::{
    CLASS_ALL, CLASS_ID_GEN_STRIDE, ClassHeader, ClassVector, MAX_CLASS_WORDS, RULE_WORDS,
    SUMMARY_WORDS,
};

use netbeast_common::field;

use super::{Class, CompileError};

/// A set of rule slots, one bit per slot, as long as the ruleset's longest
/// chain needs (the kernel's vectors are padded with zeros to `RULE_WORDS`).
pub(super) type Bits = Vec<u64>;

/// A vector with bits `0..count` set.
pub(super) fn ones(count: usize, words: usize) -> Bits {
    let mut v = vec![0u64; words];
    for (w, word) in v.iter_mut().enumerate() {
        let lo = w * 64;
        if count >= lo + 64 {
            *word = u64::MAX;
        } else if count > lo {
            *word = (1u64 << (count - lo)) - 1;
        }
    }
    v
}

#[inline]
pub(super) fn set(v: &mut [u64], bit: usize) {
    v[bit / 64] |= 1 << (bit % 64);
}

#[inline]
pub(super) fn clear(v: &mut [u64], bit: usize) {
    v[bit / 64] &= !(1 << (bit % 64));
}

#[inline]
pub(super) fn assign(v: &mut [u64], bit: usize, value: bool) {
    if value { set(v, bit) } else { clear(v, bit) }
}

#[inline]
pub(super) fn flip(v: &mut [u64], bit: usize) {
    v[bit / 64] ^= 1 << (bit % 64);
}

/// Hashes whole vectors several words at a time; SipHash would dominate the
/// compile time of large rulesets, and the keys are not attacker-chosen in a
/// way that matters (a slow compile at worst).
#[derive(Default)]
pub(super) struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        // Spread the high bits down: hashbrown uses the top 7 bits as a tag
        // and the low bits as the bucket index.
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
            self.write_u64(word);
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Gives every distinct vector of the ruleset one class id, in the order
/// they are first seen.
pub(super) struct Interner {
    base: u32,
    words: usize,
    limit: u32,
    /// Each class by its non-zero words only ([`sparse`]): a dense copy
    /// of every class is as long as the longest chain, which at 100,000
    /// rules and as many classes was 2 GiB.
    ids: HashMap<Box<[u64]>, u32, BuildHasherDefault<WordHasher>>,
    /// The vector of every slot of a chain of `.0` slots, the last one
    /// asked for: `intern` compares with it on every call, and building it
    /// each time was a large share of a 10,000-rule compile.
    all: (usize, Bits),
    /// The non-zero words of the classes each field made first: which
    /// field to blame (and coarsen) when `CLASS_WORDS` overflows.
    words_by_field: [usize; field::COUNT],
    total_words: usize,
    word_limit: u32,
}

impl Interner {
    /// `expected`: about how many classes the ruleset will have. Growing
    /// the table rehashes every vector again (whole vectors, not ids): at
    /// 10,000 rules that was a fifth of the compile.
    /// `limits`: the classes, and the words they may hold (checked again,
    /// with the summaries, when they are packed: an overflow found here
    /// stops the compile before the rest of the classes are built).
    pub(super) fn new(
        generation: u32,
        words: usize,
        (limit, word_limit): (u32, u32),
        expected: usize,
    ) -> Self {
        Interner {
            base: generation * CLASS_ID_GEN_STRIDE,
            words,
            limit,
            word_limit,
            ids: HashMap::with_capacity_and_hasher(
                expected.min(limit as usize),
                Default::default(),
            ),
            all: (0, ones(0, words)),
            words_by_field: [0; field::COUNT],
            total_words: 0,
        }
    }

    /// The field whose classes hold the most words.
    pub(super) fn heaviest_field(&self) -> usize {
        (0..field::COUNT)
            .max_by_key(|&f| self.words_by_field[f])
            .unwrap_or(0)
    }

    /// Length of every vector of this ruleset.
    pub(super) fn words(&self) -> usize {
        self.words
    }

    /// The class id of `v` in a chain of `slots` slots: [`CLASS_ALL`] when
    /// `v` holds every one of them. `chain` and `field` say where a new
    /// class came from when the limit is reached.
    pub(super) fn intern(
        &mut self,
        v: &[u64],
        (chain, slots): (&str, usize),
        field: usize,
    ) -> Result<u32, CompileError> {
        debug_assert_eq!(v.len(), self.words);
        if slots > 0 {
            if self.all.0 != slots {
                self.all = (slots, ones(slots, self.words));
            }
            if v[..] == self.all.1[..] {
                return Ok(CLASS_ALL);
            }
        }
        let key = sparse(v);
        if let Some(&id) = self.ids.get(&key[..]) {
            return Ok(id);
        }
        let n = self.ids.len() as u32;
        if n >= self.limit {
            return Err(CompileError::TooManyClasses {
                limit: self.limit,
                chain: chain.to_string(),
                field: field::NAMES[field],
            });
        }
        let id = self.base + n;
        self.words_by_field[field] += key.len() / 2;
        self.total_words += key.len() / 2;
        if self.total_words > self.word_limit as usize {
            return Err(CompileError::TooManyClassWords {
                limit: self.word_limit,
                field: field::NAMES[self.heaviest_field()],
            });
        }
        self.ids.insert(key.into_boxed_slice(), id);
        Ok(id)
    }

    /// The classes in id order, as the kernel reads them.
    pub(super) fn into_classes(self) -> Vec<Class> {
        let mut slots: Vec<Option<Box<[u64]>>> = vec![None; self.ids.len()];
        for (bits, id) in self.ids {
            slots[(id - self.base) as usize] = Some(bits);
        }
        slots
            .into_iter()
            .enumerate()
            .map(|(n, bits)| Class {
                id: self.base + n as u32,
                words: bits.expect("class ids are dense"),
            })
            .collect()
    }
}

/// The non-zero words of `v` as pairs `index, word`, in index order.
fn sparse(v: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    for (w, &word) in v.iter().enumerate() {
        if word != 0 {
            out.extend([w as u64, word]);
        }
    }
    out
}

impl Class {
    /// The non-zero words, as `(index, word)` in index order.
    pub fn nonzero(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.words.chunks_exact(2).map(|p| (p[0] as usize, p[1]))
    }

    /// The rule bits, `len` words (zero past the non-zero ones).
    pub fn bits(&self, len: usize) -> Vec<u64> {
        let mut bits = vec![0u64; len];
        for (w, word) in self.nonzero() {
            bits[w] = word;
        }
        bits
    }

    /// The class as the kernel's layout holds it: the rule words padded
    /// with zeros to `RULE_WORDS`, and the summary of each block.
    /// Built on demand (for tests and tools): a compile keeps only
    /// [`Class::bits`], which at 10,000 rules is a tenth of the size.
    pub fn vector(&self) -> Box<ClassVector> {
        let mut v = Box::new(ClassVector {
            summary: [0; SUMMARY_WORDS],
            words: [0; RULE_WORDS],
        });
        for (w, word) in self.nonzero() {
            v.words[w] = word;
        }
        v.summary = summary(&v.words);
        v
    }
}

/// The summary of `bits`, block by block: bit `w % 64` of block `w / 64`
/// set when word `w` is not zero.
fn summary(bits: &[u64]) -> [u64; SUMMARY_WORDS] {
    let mut summary = [0u64; SUMMARY_WORDS];
    for (w, &word) in bits.iter().enumerate() {
        if word != 0 {
            summary[w / 64] |= 1 << (w % 64);
        }
    }
    summary
}

/// The classes as the kernel reads them: a header per class id
/// (`CLASS_HEADERS`) and the non-zero words of every class, class after
/// class, each followed by its block summary pairs when it is not dense
/// (`CLASS_WORDS`).
pub struct PackedClasses {
    /// The `CLASS_HEADERS` value of every class, in id order (from index
    /// `generation * CLASS_ID_GEN_STRIDE`).
    pub headers: Vec<ClassHeader>,
    /// `CLASS_WORDS` from word `base` on.
    pub words: Vec<u64>,
    /// Index in `CLASS_WORDS` of `words[0]`: the generation's region.
    pub base: u32,
    /// Class id of `headers[0]`.
    id_base: u32,
}

impl PackedClasses {
    /// Packs `classes` (in id order) for `generation`; at most `limit`
    /// words in all (past it, the error blames field `heaviest`).
    pub(super) fn pack(
        generation: u32,
        classes: &[Class],
        limit: u32,
        heaviest: usize,
    ) -> Result<PackedClasses, CompileError> {
        let base = generation * MAX_CLASS_WORDS;
        let mut headers = Vec::with_capacity(classes.len());
        let mut words = Vec::new();
        for class in classes {
            let offset = base + words.len() as u32;
            words.extend(class.nonzero().map(|(_, word)| word));
            let (first, first_word) = class.nonzero().next().unwrap_or((0, 0));
            let last = class.nonzero().last().map_or(0, |(w, _)| w);
            let count = class.words.len() / 2;
            // An empty class is not dense (its word 0 is zero), as before.
            let dense = count > 0 && count == last - first + 1;
            let mut summary = [0u64; SUMMARY_WORDS];
            for (w, _) in class.nonzero() {
                summary[w / 64] |= 1 << (w % 64);
            }
            // Word 0 is never searched through the blocks (the search's
            // first step reads it from `first_word`): a block is named
            // for its words past 0 only. A class whose only bit in block
            // 0 is a rule in word 0 (a `-p tcp --syn` rule in front that
            // names no source makes every source class one) then does not
            // send the search to block 0 for nothing.
            let mut blocks = 0u64;
            for (b, &s) in summary.iter().enumerate() {
                let past_word0 = if b == 0 { s & !1 } else { s };
                if past_word0 != 0 {
                    blocks |= 1 << b;
                }
            }
            let mut summaries = 0;
            if !dense {
                // Pairs start at an even index, so a pair is never split
                // between two `CLASS_WORDS` entries.
                if words.len() % 2 == 1 {
                    words.push(0);
                }
                summaries = base + words.len() as u32;
                // The rank counts every stored word before the block, word
                // 0 included (it is stored even when block 0 has no pair).
                let mut rank = 0u64;
                for (b, &s) in summary.iter().enumerate() {
                    if blocks & (1 << b) != 0 {
                        words.extend([s, rank]);
                    }
                    rank += u64::from(s.count_ones());
                }
            }
            if words.len() > limit as usize {
                return Err(CompileError::TooManyClassWords {
                    limit,
                    field: field::NAMES[heaviest],
                });
            }
            headers.push(ClassHeader {
                first_word,
                blocks,
                offset,
                summaries,
                dense: u32::from(dense),
                first: first as u16,
                last: last as u16,
            });
        }
        Ok(PackedClasses {
            headers,
            words,
            base,
            id_base: generation * CLASS_ID_GEN_STRIDE,
        })
    }

    /// The header of class `id`, if it is one of these classes.
    pub fn header(&self, id: u32) -> Option<&ClassHeader> {
        self.headers.get(id.checked_sub(self.id_base)? as usize)
    }

    fn header_or_panic(&self, id: u32) -> &ClassHeader {
        self.header(id)
            .unwrap_or_else(|| panic!("class {id} does not exist"))
    }

    /// The packed word at `CLASS_WORDS` index `at`.
    fn at(&self, at: u32) -> u64 {
        self.words[(at - self.base) as usize]
    }

    /// The summary of block `b` of class `id` as the kernel reads it
    /// (`class_block`): a dense class's from `first..=last`, another's
    /// from its summary pair. Panics on a missing class.
    pub fn block(&self, id: u32, b: usize) -> u64 {
        let h = self.header_or_panic(id);
        if h.dense != 0 {
            return h.dense_block(b as u32);
        }
        match h.pair_index(b as u32) {
            Some(p) => self.at(p),
            None => 0,
        }
    }

    /// Word `w` of class `id` as the kernel reads it through the header
    /// (`class_word`): `first_word` for word `first`, 0 outside the
    /// non-zero words (a dense class's `first..=last`, another's
    /// summaries), else from the packed words. Panics on a missing class.
    pub fn word(&self, id: u32, w: usize) -> u64 {
        let h = self.header_or_panic(id);
        let first = usize::from(h.first);
        if w == first {
            return h.first_word;
        }
        let at = if h.dense != 0 {
            if w < first || w > usize::from(h.last) {
                return 0;
            }
            h.offset + (w - first) as u32
        } else {
            let Some(p) = h.pair_index((w / 64) as u32) else {
                return 0;
            };
            let (summary, rank) = (self.at(p), self.at(p + 1));
            let bit = w % 64;
            if summary & (1 << bit) == 0 {
                return 0;
            }
            let below = summary & ((1u64 << bit) - 1);
            h.offset + rank as u32 + below.count_ones()
        };
        self.at(at)
    }
}
