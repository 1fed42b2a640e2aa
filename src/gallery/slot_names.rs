//! The names of an HNSW index's slots (one slot a person), and the lookup from a name to its
//! slot. Every name lies in one buffer, a slot's name where the one before it ends, and the
//! lookup is a hash table of slot numbers that hashes and compares the names in that buffer.
//! A `Vec<String>` beside a `HashMap<String, u32>` held each name twice, each in an allocation
//! of its own, in a table of 32-byte entries: at a million people that was about 150 MB, this
//! is about 35 MB.
//!
//! A removed slot keeps its name in the buffer (its keys are gone, and the lookup no longer
//! finds it) until the index is built again, as the graph keeps a removed row's place.

use hashbrown::HashTable;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

#[derive(Default)]
pub(super) struct SlotNames {
    text: String,
    /// By slot: where its name ends in `text`.
    ends: Vec<u64>,
    /// The slots that answer to their name, found by its hash (SipHash with this process's
    /// own keys: names come from users).
    lookup: HashTable<u32>,
    hasher: RandomState,
}

/// Slot `slot`'s name in `text`.
fn name_in<'a>(text: &'a str, ends: &[u64], slot: u32) -> &'a str {
    let s = slot as usize;
    let start = if s == 0 { 0 } else { ends[s - 1] as usize };
    &text[start..ends[s] as usize]
}

impl SlotNames {
    /// Slots made.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Slot `slot`'s name (a removed slot's too).
    pub fn name(&self, slot: u32) -> &str {
        name_in(&self.text, &self.ends, slot)
    }

    /// The slot that answers to `name`.
    pub fn slot(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.lookup.find(hash, |&s| self.name(s) == name).copied()
    }

    /// A new slot named `name`, which no slot answers to now.
    pub fn push(&mut self, name: &str) -> u32 {
        debug_assert!(self.slot(name).is_none(), "{name:?} has a slot");
        let slot = u32::try_from(self.ends.len()).expect("fewer than 2^32 slots");
        self.text.push_str(name);
        self.ends.push(self.text.len() as u64);
        let (text, ends, hasher) = (&self.text, &self.ends, &self.hasher);
        self.lookup
            .insert_unique(hasher.hash_one(name), slot, |&s| {
                hasher.hash_one(name_in(text, ends, s))
            });
        slot
    }

    /// `slot` no longer answers to its name.
    pub fn forget(&mut self, slot: u32) {
        let hash = self.hasher.hash_one(self.name(slot));
        if let Ok(entry) = self.lookup.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
    }

    /// The slots that answer to their name, in no order.
    pub fn held(&self) -> impl Iterator<Item = u32> + '_ {
        self.lookup.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_by_slot_and_slots_by_name_until_forgotten() {
        let mut n = SlotNames::default();
        let names = [
            "Ada",
            "",
            "Émile Zola",
            "ada",
            "a much longer name than the others",
        ];
        for (i, name) in names.iter().enumerate() {
            assert_eq!(n.push(name), i as u32);
        }
        assert_eq!(n.len(), names.len());
        for (i, name) in names.iter().enumerate() {
            assert_eq!(n.name(i as u32), *name);
            assert_eq!(n.slot(name), Some(i as u32));
        }
        assert_eq!(n.slot("Emile Zola"), None);
        assert_eq!(n.slot("Ad"), None);

        // A removed person's name comes back under a new slot; the old slot keeps its text.
        n.forget(0);
        assert_eq!(n.slot("Ada"), None);
        assert_eq!(n.name(0), "Ada");
        assert_eq!(n.push("Ada"), 5);
        assert_eq!(n.slot("Ada"), Some(5));
        let mut held: Vec<u32> = n.held().collect();
        held.sort_unstable();
        assert_eq!(held, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn many_names_grow_the_table_and_stay_found() {
        let mut n = SlotNames::default();
        for i in 0..20_000 {
            n.push(&format!("person-{i:07}"));
        }
        for i in (0..20_000).step_by(7) {
            n.forget(i);
        }
        for i in 0..20_000u32 {
            let want = (i % 7 != 0).then_some(i);
            assert_eq!(n.slot(&format!("person-{i:07}")), want, "{i}");
        }
        assert_eq!(n.held().count(), 20_000 - 20_000usize.div_ceil(7));
    }
}
