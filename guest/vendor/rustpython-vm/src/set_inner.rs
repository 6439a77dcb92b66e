//! The hash table behind `set` and `frozenset`: CPython 3.11's `Objects/setobject.c` table,
//! so that the same insertions, deletions and resizes leave the elements in the same slots and
//! therefore iterate (and `pop`) in the same order as CPython.
//!
//! Open addressing with `LINEAR_PROBES` consecutive slots per probe and CPython's perturbed
//! probe sequence, `fill`/`used` accounting, dummy slots for deleted keys, `set_table_resize`'s
//! sizing and `set_pop`'s search finger. Probing is done in 64-bit arithmetic on every target, as
//! on the 64-bit CPython builds whose order programs rely on.
//!
//! Python code (`__eq__`) never runs under the table's lock: a probe that needs a comparison
//! releases the lock, compares, and resumes only if the table was not rebuilt meanwhile and the
//! compared slot still holds the same key — CPython's own restart rule.

use crate::{
    AsObject, PyObject, PyObjectRef, PyResult, VirtualMachine,
    builtins::{PyFloat, PyInt, PyStr},
    common::{
        hash::PyHash,
        lock::{PyRwLock, PyRwLockReadGuard, PyRwLockWriteGuard},
    },
    object::{Traverse, TraverseFn},
};
use core::ops::Deref;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// `PySet_MINSIZE`: the size of a fresh or cleared table.
const MIN_SIZE: usize = 8;
/// Slots inspected one after another before the probe jumps elsewhere.
const LINEAR_PROBES: u64 = 9;
const PERTURB_SHIFT: u32 = 5;
/// The hash a dummy slot carries; no live key has it, as `-1` is never a hash.
const DUMMY_HASH: PyHash = -1;

/// One slot: free (`key: None, hash: 0`), dummy (`key: None, hash: -1`) or active.
#[derive(Clone)]
struct Slot {
    key: Option<PyObjectRef>,
    hash: PyHash,
}

impl Slot {
    const FREE: Self = Self { key: None, hash: 0 };

    fn is_free(&self) -> bool {
        self.key.is_none() && self.hash != DUMMY_HASH
    }

    fn is_dummy(&self) -> bool {
        self.key.is_none() && self.hash == DUMMY_HASH
    }

    fn active(&self) -> Option<(&PyObjectRef, PyHash)> {
        self.key.as_ref().map(|key| (key, self.hash))
    }
}

#[derive(Clone)]
struct Table {
    /// Active plus dummy slots.
    fill: usize,
    /// Active slots.
    used: usize,
    slots: Vec<Slot>,
    /// Changes whenever `slots` is rebuilt: CPython's `table != so->table` check.
    generation: u64,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            fill: 0,
            used: 0,
            slots: vec![Slot::FREE; MIN_SIZE],
            generation: 0,
        }
    }
}

/// CPython's probe sequence for one hash in a table of `mask + 1` slots.
struct Probe {
    mask: u64,
    /// Start of the current run of linear probes.
    base: u64,
    /// Offset inside the run.
    offset: u64,
    perturb: u64,
}

impl Probe {
    fn new(hash: PyHash, len: usize) -> Self {
        let mask = len as u64 - 1;
        Self {
            mask,
            base: hash as u64 & mask,
            offset: 0,
            perturb: hash as u64,
        }
    }

    fn slot(&self) -> usize {
        (self.base + self.offset) as usize
    }

    fn advance(&mut self) {
        if self.base + LINEAR_PROBES <= self.mask && self.offset < LINEAR_PROBES {
            self.offset += 1;
        } else {
            self.perturb >>= PERTURB_SHIFT;
            self.base = (self
                .base
                .wrapping_mul(5)
                .wrapping_add(1)
                .wrapping_add(self.perturb))
                & self.mask;
            self.offset = 0;
        }
    }
}

impl Table {
    fn with_size(size: usize, generation: u64) -> Self {
        Self {
            fill: 0,
            used: 0,
            slots: vec![Slot::FREE; size],
            generation,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// `set_insert_clean`: place a key known to be absent into a table without dummies.
    fn insert_clean(slots: &mut [Slot], key: PyObjectRef, hash: PyHash) {
        let mut probe = Probe::new(hash, slots.len());
        while !slots[probe.slot()].is_free() {
            probe.advance();
        }
        slots[probe.slot()] = Slot {
            key: Some(key),
            hash,
        };
    }

    /// `set_table_resize`: rebuild into the smallest power of two above `min_used`, dropping
    /// dummies. Returns the old slots for the caller to release after unlocking.
    fn resize(&mut self, min_used: usize) -> Vec<Slot> {
        let mut new_size = MIN_SIZE;
        while new_size <= min_used {
            new_size <<= 1;
        }
        if new_size == MIN_SIZE && self.slots.len() == MIN_SIZE && self.fill == self.used {
            // The small table has no dummies to purge.
            return Vec::new();
        }
        let mut slots = vec![Slot::FREE; new_size];
        let old = core::mem::take(&mut self.slots);
        for (key, hash) in old.iter().filter_map(Slot::active) {
            Self::insert_clean(&mut slots, key.clone(), hash);
        }
        self.slots = slots;
        self.fill = self.used;
        self.generation = self.generation.wrapping_add(1);
        old
    }

    /// `set_add_entry`'s growth rule after a key took a never-used slot.
    fn grow_if_full(&mut self) -> Vec<Slot> {
        if self.fill * 5 < self.mask() * 3 {
            return Vec::new();
        }
        self.resize_for_used()
    }

    /// `set_table_resize` with the growth factors of `set_add_entry`: room for four times the
    /// elements, twice above 50,000.
    fn resize_for_used(&mut self) -> Vec<Slot> {
        self.resize(if self.used > 50000 {
            self.used * 2
        } else {
            self.used * 4
        })
    }

    /// The part of `set_merge` that needs no comparisons: the one big resize, then, if this
    /// table holds nothing, not even dummies, `other`'s elements laid out directly. Returns
    /// whether that finished the merge, and the old slots to release after unlocking.
    fn merge_without_comparisons(&mut self, other: &Self) -> (bool, Vec<Slot>) {
        let released = self.presize(other.used);
        if self.fill != 0 {
            return (false, released);
        }
        if self.slots.len() == other.slots.len() && other.fill == other.used {
            // Same size and no dummies: the layout is copied as it is.
            self.slots.clone_from(&other.slots);
        } else {
            for (key, hash) in other.slots.iter().filter_map(Slot::active) {
                Self::insert_clean(&mut self.slots, key.clone(), hash);
            }
        }
        self.fill = other.used;
        self.used = other.used;
        (true, released)
    }

    /// The one big resize `set_merge` and `set_update_internal` do before adding `incoming`
    /// keys they expect to be new.
    fn presize(&mut self, incoming: usize) -> Vec<Slot> {
        if (self.fill + incoming) * 5 >= self.mask() * 3 {
            self.resize((self.used + incoming) * 2)
        } else {
            Vec::new()
        }
    }

    fn entries_from(&self, position: usize) -> impl Iterator<Item = (&PyObjectRef, PyHash)> {
        self.slots.iter().skip(position).filter_map(Slot::active)
    }
}

/// Where a probe for a key ended.
enum Location {
    /// The key is in this slot.
    Present(usize),
    /// The key is absent; an insertion goes to this slot, which is free (`fresh`) or a dummy.
    Absent { slot: usize, fresh: bool },
}

/// What a probe needs from its caller to go on.
enum Step {
    Done(Location),
    /// Compare `startkey` (in `slot`) with the key outside the lock, then resume.
    Compare {
        slot: usize,
        startkey: PyObjectRef,
    },
    /// The table changed under the probe: start again.
    Restart,
}

/// Equality of two keys with equal hashes that can be decided without running Python code.
fn native_eq(stored: &PyObject, key: &PyObject, vm: &VirtualMachine) -> Option<bool> {
    let types = &vm.ctx.types;
    let (stored_class, key_class) = (stored.class(), key.class());
    if !stored_class.is(key_class) {
        return None;
    }
    if stored_class.is(types.int_type) {
        let (a, b) = (
            stored.downcast_ref::<PyInt>()?,
            key.downcast_ref::<PyInt>()?,
        );
        Some(a.as_bigint() == b.as_bigint())
    } else if stored_class.is(types.str_type) {
        let (a, b) = (
            stored.downcast_ref::<PyStr>()?,
            key.downcast_ref::<PyStr>()?,
        );
        Some(a.as_wtf8() == b.as_wtf8())
    } else if stored_class.is(types.float_type) {
        let (a, b) = (
            stored.downcast_ref::<PyFloat>()?,
            key.downcast_ref::<PyFloat>()?,
        );
        Some(a.to_f64() == b.to_f64())
    } else {
        None
    }
}

/// The probe state of one lookup, kept across the comparisons that release the lock.
struct Search {
    probe: Probe,
    generation: u64,
    /// The last dummy passed, where `set_add_entry` puts a new key.
    freeslot: Option<usize>,
    /// Whether dummies are remembered as places to insert (`set_add_entry`) or skipped
    /// (`set_lookkey`).
    for_insert: bool,
}

impl Search {
    fn new(table: &Table, hash: PyHash, for_insert: bool) -> Self {
        Self {
            probe: Probe::new(hash, table.slots.len()),
            generation: table.generation,
            freeslot: None,
            for_insert,
        }
    }

    /// Probe until the key is found, a free slot ends the search, or a comparison is needed.
    fn step(&mut self, table: &Table, key: &PyObject, hash: PyHash, vm: &VirtualMachine) -> Step {
        loop {
            let slot = self.probe.slot();
            let entry = &table.slots[slot];
            match &entry.key {
                None if entry.hash != DUMMY_HASH => {
                    return match self.freeslot {
                        // A comparison let other code fill the dummy meanwhile.
                        Some(dummy) if !table.slots[dummy].is_dummy() => Step::Restart,
                        Some(dummy) => Step::Done(Location::Absent {
                            slot: dummy,
                            fresh: false,
                        }),
                        None => Step::Done(Location::Absent { slot, fresh: true }),
                    };
                }
                None => {
                    if self.for_insert {
                        self.freeslot = Some(slot);
                    }
                }
                Some(stored) if entry.hash == hash => {
                    if stored.is(key) {
                        return Step::Done(Location::Present(slot));
                    }
                    match native_eq(stored, key, vm) {
                        Some(true) => return Step::Done(Location::Present(slot)),
                        Some(false) => {}
                        None => {
                            return Step::Compare {
                                slot,
                                startkey: stored.clone(),
                            };
                        }
                    }
                }
                Some(_) => {}
            }
            self.probe.advance();
        }
    }
}

/// A `set`'s or `frozenset`'s elements, laid out as CPython lays them out.
#[derive(Default)]
pub(crate) struct SetTable {
    inner: PyRwLock<Table>,
    /// `so->finger`: where the next `pop` starts looking. It belongs to the set, not to a table,
    /// so clearing, resizing and swapping tables keep it, as in CPython.
    finger: AtomicUsize,
}

unsafe impl Traverse for Table {
    fn traverse(&self, tracer_fn: &mut TraverseFn<'_>) {
        for slot in &self.slots {
            slot.key.traverse(tracer_fn);
        }
    }
}

unsafe impl Traverse for SetTable {
    fn traverse(&self, tracer_fn: &mut TraverseFn<'_>) {
        self.inner.traverse(tracer_fn);
    }
}

impl Clone for SetTable {
    /// `set_copy`: a new set updated from this one.
    fn clone(&self) -> Self {
        let copy = Self::default();
        let source = self.read().clone();
        if source.used != 0 {
            let (merged, _) = copy.write().merge_without_comparisons(&source);
            debug_assert!(merged, "a new table is empty");
        }
        copy
    }
}

impl SetTable {
    fn read(&self) -> PyRwLockReadGuard<'_, Table> {
        self.inner.read()
    }

    fn write(&self) -> PyRwLockWriteGuard<'_, Table> {
        self.inner.write()
    }

    pub(crate) fn len(&self) -> usize {
        self.read().used
    }

    pub(crate) fn sizeof(&self) -> usize {
        core::mem::size_of::<Self>() + self.read().slots.len() * core::mem::size_of::<Slot>()
    }

    /// Probe for `key` under the guard `lock` hands out, releasing it around Python
    /// comparisons. Returns the guard the final answer holds under.
    fn locate<'a, G>(
        &'a self,
        lock: impl Fn(&'a Self) -> G,
        key: &PyObject,
        hash: PyHash,
        for_insert: bool,
        vm: &VirtualMachine,
    ) -> PyResult<(G, Location)>
    where
        G: Deref<Target = Table>,
    {
        'restart: loop {
            let mut guard = lock(self);
            let mut search = Search::new(&guard, hash, for_insert);
            loop {
                match search.step(&guard, key, hash, vm) {
                    Step::Done(location) => return Ok((guard, location)),
                    Step::Restart => continue 'restart,
                    Step::Compare { slot, startkey } => {
                        drop(guard);
                        let equal = vm.bool_eq(&startkey, key);
                        if for_insert && matches!(equal, Ok(true)) {
                            // `set_add_entry` is done with an equal key, whatever the
                            // comparison did to the set.
                            return Ok((lock(self), Location::Present(slot)));
                        }
                        let equal = equal?;
                        guard = lock(self);
                        let unchanged = guard.generation == search.generation
                            && guard.slots[slot]
                                .key
                                .as_ref()
                                .is_some_and(|k| k.is(&startkey));
                        if !unchanged {
                            continue 'restart;
                        }
                        if equal {
                            return Ok((guard, Location::Present(slot)));
                        }
                        search.probe.advance();
                    }
                }
            }
        }
    }

    /// `set_contains_entry`.
    pub(crate) fn contains(
        &self,
        key: &PyObject,
        hash: PyHash,
        vm: &VirtualMachine,
    ) -> PyResult<bool> {
        let (_guard, location) = self.locate(Self::read, key, hash, false, vm)?;
        Ok(matches!(location, Location::Present(_)))
    }

    /// `set_add_entry`.
    pub(crate) fn add(&self, key: &PyObject, hash: PyHash, vm: &VirtualMachine) -> PyResult<()> {
        let (mut table, location) = self.locate(Self::write, key, hash, true, vm)?;
        let Location::Absent { slot, fresh } = location else {
            return Ok(());
        };
        table.slots[slot] = Slot {
            key: Some(key.to_owned()),
            hash,
        };
        table.used += 1;
        if fresh {
            table.fill += 1;
            let released = table.grow_if_full();
            drop(table);
            drop(released);
        }
        Ok(())
    }

    /// `set_discard_entry`: whether the key was there.
    pub(crate) fn discard(
        &self,
        key: &PyObject,
        hash: PyHash,
        vm: &VirtualMachine,
    ) -> PyResult<bool> {
        let (mut table, location) = self.locate(Self::write, key, hash, false, vm)?;
        let Location::Present(slot) = location else {
            return Ok(false);
        };
        let removed = core::mem::replace(
            &mut table.slots[slot],
            Slot {
                key: None,
                hash: DUMMY_HASH,
            },
        );
        table.used -= 1;
        drop(table);
        drop(removed);
        Ok(true)
    }

    /// `set_pop`: the first active slot at or after the finger, wrapping around.
    pub(crate) fn pop(&self) -> Option<PyObjectRef> {
        let mut table = self.write();
        if table.used == 0 {
            return None;
        }
        let mask = table.mask();
        let mut slot = self.finger.load(Relaxed) & mask;
        while table.slots[slot].key.is_none() {
            slot = if slot == mask { 0 } else { slot + 1 };
        }
        let key = table.slots[slot].key.take();
        table.slots[slot].hash = DUMMY_HASH;
        table.used -= 1;
        self.finger.store(slot + 1, Relaxed);
        key
    }

    /// `set_clear_internal`.
    pub(crate) fn clear(&self) {
        let _released = {
            let mut table = self.write();
            let generation = table.generation.wrapping_add(1);
            core::mem::replace(&mut *table, Table::with_size(MIN_SIZE, generation))
        };
    }

    /// `set_swap_bodies` with a set no one else sees: this set takes over a copy of `other`'s
    /// layout and keeps its own finger.
    pub(crate) fn replace_contents(&self, other: &Self) {
        let mut replacement = other.read().clone();
        let _released = {
            let mut table = self.write();
            replacement.generation = table.generation.wrapping_add(1);
            core::mem::replace(&mut *table, replacement)
        };
    }

    /// `set_merge`: add every element of `other`, reusing its stored hashes.
    pub(crate) fn merge(&self, other: &Self, vm: &VirtualMachine) -> PyResult<()> {
        if core::ptr::eq(self, other) {
            return Ok(());
        }
        let source = other.read().clone();
        if source.used == 0 {
            return Ok(());
        }
        let (merged, released) = self.write().merge_without_comparisons(&source);
        drop(released);
        if merged {
            return Ok(());
        }
        for (key, hash) in source.entries_from(0) {
            self.add(key, hash, vm)?;
        }
        Ok(())
    }

    /// The end of `set_difference_update_internal`: a table more than a quarter dummies is
    /// rebuilt without them.
    pub(crate) fn purge_dummies(&self) {
        let released = {
            let mut table = self.write();
            if table.fill - table.used <= table.mask() / 4 {
                return;
            }
            table.resize_for_used()
        };
        drop(released);
    }

    /// The one big resize `set_update_internal` does before adding a dict's `incoming` keys.
    pub(crate) fn presize(&self, incoming: usize) {
        let released = self.write().presize(incoming);
        drop(released);
    }

    /// Every element with its stored hash, in slot order (`set_next`).
    pub(crate) fn entries(&self) -> Vec<(PyObjectRef, PyHash)> {
        self.read()
            .entries_from(0)
            .map(|(key, hash)| (key.clone(), hash))
            .collect()
    }

    /// The elements in slot order, starting at slot `position`.
    pub(crate) fn keys_from(&self, position: usize) -> Vec<PyObjectRef> {
        self.read()
            .entries_from(position)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// `setiter_iternext`'s step: the first element at or after slot `position` and the slot
    /// after it, or `None` at the end. `Err` if the set's size is no longer `used`.
    pub(crate) fn next_entry(
        &self,
        position: usize,
        used: usize,
    ) -> Result<Option<(usize, PyObjectRef)>, SetChanged> {
        let table = self.read();
        if table.used != used {
            return Err(SetChanged);
        }
        Ok(table
            .slots
            .iter()
            .enumerate()
            .skip(position)
            .find_map(|(slot, entry)| entry.key.as_ref().map(|key| (slot + 1, key.clone()))))
    }

    /// Fold stored hashes under the read lock; the callback must not run Python.
    pub(crate) fn fold_hashes<Acc>(&self, init: Acc, f: impl FnMut(Acc, PyHash) -> Acc) -> Acc {
        self.read()
            .entries_from(0)
            .map(|(_, hash)| hash)
            .fold(init, f)
    }
}

/// The set changed size while an iterator walked it.
#[derive(Debug)]
pub(crate) struct SetChanged;
