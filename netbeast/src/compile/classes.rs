//! Rule bit vectors and their deduplication into class ids.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use netbeast_common::{CLASS_ALL, ClassHeader, ClassVector, RULE_WORDS, SUMMARY_WORDS};

use netbeast_common::field;

use super::{Class, CompileError};

/// A set of rule slots, one bit per slot, as long as the ruleset's longest
/// chain needs (the kernel's vectors are padded with zeros to `RULE_WORDS`),
/// kept with what interning it needs: which words are not zero (one bit
/// each) and a hash of the non-zero words, both updated as bits change. So
/// a vector that differs from the last one interned in a few slots costs
/// those slots, not the chain's length: at 100,000 rules a vector is 1,563
/// words, and reading each whole (to find its non-zero words, to copy a
/// parent prefix's) was most of the compile.
#[derive(Clone)]
pub(super) struct Bits {
    words: Vec<u64>,
    /// Bit `w % 64` of `nonzero[w / 64]`: word `w` is not zero.
    nonzero: Vec<u64>,
    /// How many words are not zero.
    count: usize,
    /// XOR of [`word_hash`] over the non-zero words.
    hash: u64,
}

/// The hash of word `w` holding `word`: 0 for a zero word, so a vector's
/// hash depends on its non-zero words only and changes by two of these
/// when one word does. Only speed depends on its quality: every hit is
/// checked against the class's words.
#[inline]
fn word_hash(w: usize, word: u64) -> u64 {
    if word == 0 {
        return 0;
    }
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    mix(mix(word) ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

impl Bits {
    /// A vector with bits `0..count` set.
    pub(super) fn ones(count: usize, words: usize) -> Bits {
        let mut v = Bits {
            words: vec![0; words],
            nonzero: vec![0; words.div_ceil(64)],
            count: 0,
            hash: 0,
        };
        for w in 0..words.min(count.div_ceil(64)) {
            let lo = w * 64;
            v.put(
                w,
                if count >= lo + 64 {
                    u64::MAX
                } else {
                    (1u64 << (count - lo)) - 1
                },
            );
        }
        v
    }

    /// Word `w` becomes `new`; the non-zero words and the hash follow.
    #[inline]
    fn put(&mut self, w: usize, new: u64) {
        let old = self.words[w];
        if old == new {
            return;
        }
        self.hash ^= word_hash(w, old) ^ word_hash(w, new);
        if old == 0 {
            self.nonzero[w / 64] |= 1 << (w % 64);
            self.count += 1;
        } else if new == 0 {
            self.nonzero[w / 64] &= !(1 << (w % 64));
            self.count -= 1;
        }
        self.words[w] = new;
    }

    /// Sets `bit` to `value`; returns what it was.
    #[inline]
    pub(super) fn assign(&mut self, bit: usize, value: bool) -> bool {
        let (w, mask) = (bit / 64, 1u64 << (bit % 64));
        let old = self.words[w];
        self.put(w, if value { old | mask } else { old & !mask });
        old & mask != 0
    }

    #[inline]
    pub(super) fn clear(&mut self, bit: usize) {
        self.assign(bit, false);
    }

    #[inline]
    pub(super) fn flip(&mut self, bit: usize) {
        let w = bit / 64;
        self.put(w, self.words[w] ^ (1 << (bit % 64)));
    }

    /// The non-zero words as pairs `index, word`, in index order.
    fn sparse(&self) -> Box<[u64]> {
        let mut out = Vec::with_capacity(2 * self.count);
        for (b, &summary) in self.nonzero.iter().enumerate() {
            let mut s = summary;
            while s != 0 {
                let w = b * 64 + s.trailing_zeros() as usize;
                out.extend([w as u64, self.words[w]]);
                s &= s - 1;
            }
        }
        out.into_boxed_slice()
    }

    /// Whether this vector's non-zero words are `pairs` ([`Bits::sparse`]).
    fn is(&self, pairs: &[u64]) -> bool {
        pairs.len() == 2 * self.count
            && pairs
                .chunks_exact(2)
                .all(|p| self.words[p[0] as usize] == p[1])
    }
}

/// Changes made to a vector, to be taken back: a walk down a tree of
/// values (prefixes inside prefixes) keeps one vector and undoes a
/// subtree's changes when it leaves it, instead of copying the parent's
/// vector for every child.
#[derive(Default)]
pub(super) struct Undo(Vec<(usize, bool)>);

impl Undo {
    /// Sets `bit` of `v` to `value`, remembering what it was.
    pub(super) fn assign(&mut self, v: &mut Bits, bit: usize, value: bool) {
        let old = v.assign(bit, value);
        if old != value {
            self.0.push((bit, old));
        }
    }

    /// A mark to go back to.
    pub(super) fn mark(&self) -> usize {
        self.0.len()
    }

    /// Takes back every change made since `mark`, latest first.
    pub(super) fn back_to(&mut self, v: &mut Bits, mark: usize) {
        for (bit, old) in self.0.drain(mark..).rev() {
            v.assign(bit, old);
        }
    }
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
    /// Each class by its non-zero words only ([`Bits::sparse`]), in id
    /// order: a dense copy of every class is as long as the longest chain,
    /// which at 100,000 rules and as many classes was 2 GiB.
    classes: Vec<Box<[u64]>>,
    /// The class of each vector hash, the first vector seen with it.
    by_hash: HashMap<u64, u32, BuildHasherDefault<WordHasher>>,
    /// The classes whose hash an earlier, different class holds: looked up
    /// by their words, and only when the hash's class is not the vector.
    collided: HashMap<Box<[u64]>, u32, BuildHasherDefault<WordHasher>>,
    /// The vector of every slot of a chain of `.0` slots, the last one
    /// asked for: `intern` compares with it on every call.
    all: (usize, Bits),
    /// The non-zero words of the classes each field made first: which
    /// field to blame (and coarsen) when `CLASS_WORDS` overflows.
    words_by_field: [usize; field::COUNT],
    total_words: usize,
    word_limit: u32,
}

impl Interner {
    /// `expected`: about how many classes the ruleset will have (the
    /// tables are made that large at once).
    /// `limits`: the classes, and the words they may hold (checked again,
    /// with the summaries, when they are packed: an overflow found here
    /// stops the compile before the rest of the classes are built).
    pub(super) fn new(
        base: u32,
        words: usize,
        (limit, word_limit): (u32, u32),
        expected: usize,
    ) -> Self {
        let expected = expected.min(limit as usize);
        Interner {
            base,
            words,
            limit,
            word_limit,
            classes: Vec::with_capacity(expected),
            by_hash: HashMap::with_capacity_and_hasher(expected, Default::default()),
            collided: HashMap::default(),
            all: (0, Bits::ones(0, words)),
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
    /// class came from when the limit is reached. Costs the class's
    /// non-zero words when it exists, and the vector's words over 64 more
    /// when it is new.
    pub(super) fn intern(
        &mut self,
        v: &Bits,
        (chain, slots): (&str, usize),
        field: usize,
    ) -> Result<u32, CompileError> {
        debug_assert_eq!(v.words.len(), self.words);
        if slots > 0 {
            if self.all.0 != slots {
                self.all = (slots, Bits::ones(slots, self.words));
            }
            let all = &self.all.1;
            if v.hash == all.hash && v.count == all.count && v.words == all.words {
                return Ok(CLASS_ALL);
            }
        }
        let by_words = match self.by_hash.get(&v.hash) {
            None => None,
            Some(&id) if v.is(&self.classes[(id - self.base) as usize]) => return Ok(id),
            Some(_) => {
                let key = v.sparse();
                if let Some(&id) = self.collided.get(&key) {
                    return Ok(id);
                }
                Some(key)
            }
        };
        let n = self.classes.len() as u32;
        if n >= self.limit {
            return Err(CompileError::TooManyClasses {
                limit: self.limit,
                chain: chain.to_string(),
                field: field::NAMES[field],
            });
        }
        let id = self.base + n;
        self.words_by_field[field] += v.count;
        self.total_words += v.count;
        if self.total_words > self.word_limit as usize {
            return Err(CompileError::TooManyClassWords {
                limit: self.word_limit,
                field: field::NAMES[self.heaviest_field()],
            });
        }
        match by_words {
            None => {
                self.by_hash.insert(v.hash, id);
                self.classes.push(v.sparse());
            }
            Some(key) => {
                self.classes.push(key.clone());
                self.collided.insert(key, id);
            }
        }
        Ok(id)
    }

    /// The classes in id order, as the kernel reads them.
    pub(super) fn into_classes(self) -> Vec<Class> {
        let base = self.base;
        self.classes
            .into_iter()
            .enumerate()
            .map(|(n, words)| Class {
                id: base + n as u32,
                words,
            })
            .collect()
    }
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
    /// `generation * Capacity::classes()`).
    pub headers: Vec<ClassHeader>,
    /// `CLASS_WORDS` from word `base` on.
    pub words: Vec<u64>,
    /// Index in `CLASS_WORDS` of `words[0]`: the generation's region.
    pub base: u32,
    /// Class id of `headers[0]`.
    id_base: u32,
}

impl PackedClasses {
    /// Packs `classes` (in id order, the first one's id `id_base`) at
    /// `base` of `CLASS_WORDS` (their generation's region); at most `limit`
    /// words in all (past it, the error blames field `heaviest`).
    pub(super) fn pack(
        id_base: u32,
        base: u32,
        classes: &[Class],
        limit: u32,
        heaviest: usize,
    ) -> Result<PackedClasses, CompileError> {
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
            id_base,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the bookkeeping of `v` must be, computed from its words.
    fn recomputed(v: &Bits) -> (Vec<u64>, usize, u64) {
        let mut nonzero = vec![0u64; v.words.len().div_ceil(64)];
        let (mut count, mut hash) = (0, 0);
        for (w, &word) in v.words.iter().enumerate() {
            if word != 0 {
                nonzero[w / 64] |= 1 << (w % 64);
                count += 1;
                hash ^= word_hash(w, word);
            }
        }
        (nonzero, count, hash)
    }

    /// Checks `v`'s bookkeeping against its words.
    fn check(v: &Bits, start: &Bits) -> Result<(), TestCaseError> {
        let (nonzero, count, hash) = recomputed(v);
        prop_assert_eq!(&v.nonzero, &nonzero);
        prop_assert_eq!(v.count, count);
        prop_assert_eq!(v.hash, hash);
        let sparse: Vec<u64> = v
            .words
            .iter()
            .enumerate()
            .filter(|&(_, &w)| w != 0)
            .flat_map(|(i, &w)| [i as u64, w])
            .collect();
        prop_assert_eq!(&v.sparse()[..], &sparse[..]);
        prop_assert!(v.is(&sparse));
        prop_assert_eq!(v.is(&start.sparse()), v.words == start.words);
        Ok(())
    }

    proptest! {
        /// Any changes keep the non-zero words, their count and the hash
        /// as a vector built from scratch has them; changes made through
        /// an undo log, taken back, leave the vector as it was.
        #[test]
        fn bits_keep_their_bookkeeping(
            count in 0usize..320,
            ops in prop::collection::vec((0u8..3, 0usize..320, any::<bool>()), 0..100),
            undone in prop::collection::vec((0usize..320, any::<bool>()), 0..100),
        ) {
            let mut v = Bits::ones(count, 5);
            let start = v.clone();
            check(&v, &start)?;
            for &(op, bit, value) in &ops {
                match op {
                    0 => v.clear(bit),
                    1 => v.flip(bit),
                    _ => {
                        v.assign(bit, value);
                    }
                }
                check(&v, &start)?;
            }
            let before = v.clone();
            let mut undo = Undo::default();
            let mark = undo.mark();
            for &(bit, value) in &undone {
                undo.assign(&mut v, bit, value);
                check(&v, &start)?;
            }
            undo.back_to(&mut v, mark);
            check(&v, &start)?;
            prop_assert_eq!(&v.words, &before.words);
            prop_assert_eq!(v.hash, before.hash);
        }
    }

    /// Two different vectors with one hash (made so here; a real collision
    /// is a 2^-64 event) get two classes, each found again.
    #[test]
    fn vectors_whose_hashes_collide_keep_their_own_classes() {
        let mut interner = Interner::new(0, 2, (100, 1000), 4);
        let mut a = Bits::ones(0, 2);
        a.assign(3, true);
        let mut b = Bits::ones(0, 2);
        b.assign(70, true);
        b.hash = a.hash;
        let mut c = Bits::ones(0, 2);
        c.assign(100, true);
        c.hash = a.hash;
        let here = ("INPUT", 0);
        let ia = interner.intern(&a, here, field::SRC).unwrap();
        let ib = interner.intern(&b, here, field::SRC).unwrap();
        let ic = interner.intern(&c, here, field::SRC).unwrap();
        assert!(ia != ib && ib != ic && ia != ic);
        for (v, id) in [(&a, ia), (&b, ib), (&c, ic), (&b, ib), (&a, ia)] {
            assert_eq!(interner.intern(v, here, field::SRC).unwrap(), id);
        }
        let classes = interner.into_classes();
        assert_eq!(
            &classes[(ib - classes[0].id) as usize].words[..],
            &[1, 1 << 6]
        );
    }

    /// A vector holding every slot of its chain is `CLASS_ALL`, however it
    /// was made; one slot short of it is not.
    #[test]
    fn every_slot_is_class_all() {
        let mut interner = Interner::new(0, 3, (100, 1000), 4);
        let mut v = Bits::ones(0, 3);
        for bit in (0..130).rev() {
            v.assign(bit, true);
        }
        assert_eq!(
            interner.intern(&v, ("INPUT", 130), field::SRC).unwrap(),
            CLASS_ALL
        );
        v.clear(129);
        assert_ne!(
            interner.intern(&v, ("INPUT", 130), field::SRC).unwrap(),
            CLASS_ALL
        );
    }
}
