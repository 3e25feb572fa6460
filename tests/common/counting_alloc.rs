//! A counting global allocator for the allocation tests: counts the allocations made on the
//! current thread while [`allocations_in`] runs (the test harness allocates on its own threads),
//! and, after [`watch_thread`], every allocation made on another thread of a given name (a
//! shard's executor thread). Include with `#[path = "common/counting_alloc.rs"] mod
//! counting_alloc;`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Whether this thread is the watched one: 0 not known yet, 1 yes, 2 no, 3 finding out.
    static WATCHED: Cell<u8> = const { Cell::new(0) };
}

/// The watched thread's name is this prefix followed by digits only.
static WATCH_PREFIX: OnceLock<&'static str> = OnceLock::new();
static WATCHING: AtomicUsize = AtomicUsize::new(0);
static WATCHED_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static WATCHED_INSIDE: AtomicU64 = AtomicU64::new(0);
static INSIDE: OnceLock<fn() -> bool> = OnceLock::new();

/// Counts allocations on threads named `prefix` + digits (glommio names an executor's thread
/// `<name>-<executor id>`) from now on, and apart those made while `inside()` is true on that
/// thread; see [`watched_allocations`].
pub fn watch_thread(prefix: &'static str, inside: fn() -> bool) {
    let _ = WATCH_PREFIX.set(prefix);
    let _ = INSIDE.set(inside);
    WATCHING.store(1, Ordering::SeqCst);
}

/// Allocations made so far on the watched thread: (all, those while `inside()`).
pub fn watched_allocations() -> (u64, u64) {
    (
        WATCHED_ALLOCATIONS.load(Ordering::SeqCst),
        WATCHED_INSIDE.load(Ordering::SeqCst),
    )
}

fn note_watched() {
    if WATCHING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let _ = WATCHED.try_with(|w| {
        if w.get() == 0 {
            w.set(3); // allocations while finding out (thread::current) are not looked at
            let name = std::thread::current().name().map(str::to_owned);
            let yes = WATCH_PREFIX.get().is_some_and(|p| {
                name.as_deref().is_some_and(|n| {
                    n.strip_prefix(p).is_some_and(|rest| {
                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                    })
                })
            });
            w.set(if yes { 1 } else { 2 });
        }
        if w.get() == 1 {
            WATCHED_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            if INSIDE.get().is_some_and(|inside| inside()) {
                WATCHED_INSIDE.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

fn note_allocation() {
    note_watched();
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the heap allocations it made on this thread.
pub fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCATIONS.with(Cell::get))
}

#[test]
fn the_counter_sees_allocations() {
    let (v, n) = allocations_in(|| vec![1u8; 100]);
    assert!(n >= 1 && v.len() == 100);
}
