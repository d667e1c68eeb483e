//! The simulator's agenda: what happens when, in order, and equal instants in the order
//! they were scheduled.
//!
//! A calendar of 1 ms buckets over the next second, each put in order only when its turn
//! comes, and a heap for what lies further ahead. One heap of every pending action
//! (hundreds of thousands at 10 000 nodes) missed the cache at every level of each push
//! and pop; the heap of the bucket at hand holds what happens within a millisecond.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

const BUCKET_NS: u64 = 1_000_000;
const BUCKETS: u64 = 1024;

/// When (ns from the epoch), in which order among equals, and where the item waits.
type Key = Reverse<(u64, u64, usize)>;

#[derive(Debug)]
pub(super) struct Agenda<T> {
    epoch: Instant,
    /// The bucket at hand: everything in it, and anything scheduled before its end.
    current: BinaryHeap<Key>,
    at: u64,
    /// The buckets after it (`at + 1` to `at + BUCKETS - 1`), by number modulo `BUCKETS`.
    wheel: Vec<Vec<Key>>,
    /// What lies beyond the wheel.
    far: BinaryHeap<Key>,
    /// The items, in slots the keys name, so that ordering moves three integers.
    items: Vec<Option<T>>,
    free: Vec<usize>,
    seq: u64,
    pending: usize,
}

impl<T> Agenda<T> {
    pub(super) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            current: BinaryHeap::new(),
            at: 0,
            wheel: (0..BUCKETS).map(|_| Vec::new()).collect(),
            far: BinaryHeap::new(),
            items: Vec::new(),
            free: Vec::new(),
            seq: 0,
            pending: 0,
        }
    }

    /// Schedules `item` for `at` (never before the epoch).
    pub(super) fn schedule(&mut self, at: Instant, item: T) {
        let ns = at.saturating_duration_since(self.epoch).as_nanos() as u64;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.items[slot] = Some(item);
                slot
            }
            None => {
                self.items.push(Some(item));
                self.items.len() - 1
            }
        };
        self.seq += 1;
        self.pending += 1;
        self.place(Reverse((ns, self.seq, slot)));
    }

    fn place(&mut self, key: Key) {
        let bucket = key.0 .0 / BUCKET_NS;
        if bucket <= self.at {
            self.current.push(key);
        } else if bucket < self.at + BUCKETS {
            self.wheel[(bucket % BUCKETS) as usize].push(key);
        } else {
            self.far.push(key);
        }
    }

    /// The next item due no later than `end`, with its instant; `None` when nothing is.
    pub(super) fn pop_until(&mut self, end: Instant) -> Option<(Instant, T)> {
        let end_ns = end.saturating_duration_since(self.epoch).as_nanos() as u64;
        loop {
            if let Some(&Reverse((ns, _, slot))) = self.current.peek() {
                if ns > end_ns {
                    return None;
                }
                self.current.pop();
                self.pending -= 1;
                self.free.push(slot);
                let item = self.items[slot]
                    .take()
                    .expect("a scheduled slot holds its item");
                return Some((self.epoch + Duration::from_nanos(ns), item));
            }
            if self.pending == 0 || (self.at + 1) * BUCKET_NS > end_ns {
                return None;
            }
            self.advance();
        }
    }

    /// Moves on to the next bucket; what lies far ahead comes onto the wheel as its
    /// bucket comes within reach.
    fn advance(&mut self) {
        self.at += 1;
        while let Some(&Reverse((ns, ..))) = self.far.peek() {
            if ns / BUCKET_NS >= self.at + BUCKETS {
                break;
            }
            let key = self.far.pop().expect("peeked");
            self.place(key);
        }
        let next = std::mem::take(&mut self.wheel[(self.at % BUCKETS) as usize]);
        let spent = std::mem::replace(&mut self.current, BinaryHeap::from(next));
        // The empty heap's room serves a later bucket.
        self.wheel[(self.at % BUCKETS) as usize] = spent.into_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_in_time_order_and_equal_times_in_scheduling_order() {
        let epoch = Instant::now();
        let mut agenda = Agenda::new(epoch);
        let ms = |n: u64| epoch + Duration::from_micros(n * 1000);
        // Within a bucket, in the next ones, and beyond the wheel (2 s, 5 s).
        for (t, name) in [
            (5_000, "far"),
            (3, "c"),
            (0, "a"),
            (3, "d"),
            (2_000, "beyond"),
            (1, "b"),
        ] {
            agenda.schedule(ms(t), name);
        }
        let mut seen = Vec::new();
        while let Some((at, name)) = agenda.pop_until(ms(10_000)) {
            seen.push((at, name));
            if name == "b" {
                // Scheduled while its bucket is at hand: still in order.
                agenda.schedule(at, "b2");
                agenda.schedule(ms(2), "c0");
            }
        }
        let names: Vec<&str> = seen.iter().map(|(_, n)| *n).collect();
        assert_eq!(names, ["a", "b", "b2", "c0", "c", "d", "beyond", "far"]);
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(seen[6].0, ms(2_000));
    }

    #[test]
    fn nothing_after_the_end_is_handed_out_and_it_stays_for_later() {
        let epoch = Instant::now();
        let mut agenda = Agenda::new(epoch);
        agenda.schedule(epoch + Duration::from_millis(1500), 1);
        assert!(agenda
            .pop_until(epoch + Duration::from_millis(1000))
            .is_none());
        // Scheduled at the end of the first run, behind where the calendar stands.
        agenda.schedule(epoch + Duration::from_millis(1000), 0);
        let at = |x: Option<(Instant, i32)>| x.map(|(t, v)| (t - epoch, v));
        let end = epoch + Duration::from_secs(2);
        assert_eq!(
            at(agenda.pop_until(end)),
            Some((Duration::from_millis(1000), 0))
        );
        assert_eq!(
            at(agenda.pop_until(end)),
            Some((Duration::from_millis(1500), 1))
        );
        assert_eq!(at(agenda.pop_until(end)), None);
    }
}
