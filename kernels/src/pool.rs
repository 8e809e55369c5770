//! A small thread pool that stays warm between calls: workers spin briefly on a generation
//! counter (a decode step issues hundreds of short parallel regions, where waking parked threads
//! would dominate), then sleep on a condition variable when idle. One parallel region at a time
//! (a call lock serialises concurrent callers); a region started from inside a task runs inline.
//! Tasks are handed out by an atomic counter, and the caller returns as soon as every task is
//! done: it never waits for a worker that has not started (on a busy machine a descheduled worker
//! simply takes no tasks), which keeps the pool fast when other processes compete for the cores.
//!
//! Protocol: `generation` is a seqlock (odd while the caller publishes a job). A worker registers
//! in `active` and then re-checks the generation before it reads the job; the caller waits for
//! `active == 0` after making the generation odd and before touching the job, so no worker can
//! hold a job pointer across a publish. A worker that registers late, after the caller returned,
//! finds no task left to claim and never calls the (then dangling) job.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    generation: AtomicUsize,
    active: AtomicUsize,
    next: AtomicUsize,
    n_tasks: AtomicUsize,
    finished: AtomicUsize,
    job: UnsafeCell<Option<Job>>,
    sleep: Mutex<usize>,
    wake: Condvar,
    stop: AtomicBool,
}

// SAFETY: `job`, `n_tasks` and `next` are reset only by the caller holding `call`, between an odd
// generation and the next even one, while no worker is active (see the module protocol); workers
// read the job only while registered in `active` under an even, unchanged generation, and call it
// only for a task index they claimed, which exists only while the caller waits in `run`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    n_threads: usize,
    call: Mutex<()>,
}

thread_local! {
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Spin iterations before a worker parks (about 50-100 µs on current CPUs).
const SPIN: u32 = 20_000;

/// One step of a spin wait: mostly `pause`, with a yield every 16 steps so that a thread that
/// shares its core with another process (more threads than free cores) lets the thread it waits
/// for run instead of burning its time slice.
#[inline]
fn backoff(spins: &mut u32) {
    *spins += 1;
    if spins.is_multiple_of(16) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

impl Pool {
    /// A pool of `n_threads` threads in total (the caller counts as one).
    pub fn new(n_threads: usize) -> Pool {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            n_tasks: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            sleep: Mutex::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        for w in 1..n_threads {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("ares-kernel-{w}"))
                .spawn(move || worker(s))
                .expect("spawning a kernel worker thread");
        }
        Pool {
            shared,
            n_threads,
            call: Mutex::new(()),
        }
    }

    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Run `f(0..n_tasks)` across the pool and return when every task is done.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.n_threads == 1 || n_tasks == 1 || IN_POOL.with(|p| p.get()) {
            (0..n_tasks).for_each(f);
            return;
        }
        let _guard = self.call.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // Odd generation: publishing. Wait until no worker still holds the previous job.
        s.generation.fetch_add(1, Ordering::SeqCst);
        let mut spins = 0u32;
        while s.active.load(Ordering::SeqCst) != 0 {
            backoff(&mut spins);
        }
        // SAFETY: no worker is active and none can become active until the generation is even
        // again; the transmute only erases the lifetime of `f`, which outlives every call of it
        // (calls happen only for claimed tasks, all finished before `run` returns).
        unsafe {
            let job: Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f);
            *s.job.get() = Some(job);
        }
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.finished.store(0, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::SeqCst);
        {
            let sleepers = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            if *sleepers > 0 {
                s.wake.notify_all();
            }
        }
        IN_POOL.with(|p| p.set(true));
        work(s, f);
        IN_POOL.with(|p| p.set(false));
        let mut spins = 0u32;
        while s.finished.load(Ordering::Acquire) < n_tasks {
            backoff(&mut spins);
        }
    }
}

/// Claim and run tasks until none is left.
fn work(s: &Shared, f: &(dyn Fn(usize) + Sync)) {
    let n = s.n_tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
        s.finished.fetch_add(1, Ordering::Release);
    }
}

fn worker(s: Arc<Shared>) {
    IN_POOL.with(|p| p.set(true));
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        let gen = loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen && g.is_multiple_of(2) {
                break g;
            }
            if spins < SPIN {
                backoff(&mut spins);
                continue;
            }
            let mut sleepers = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            let g = s.generation.load(Ordering::Acquire);
            if (g != seen && g.is_multiple_of(2)) || s.stop.load(Ordering::Acquire) {
                continue;
            }
            *sleepers += 1;
            sleepers = s.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
            *sleepers -= 1;
            drop(sleepers);
            spins = 0;
        };
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        s.active.fetch_add(1, Ordering::SeqCst);
        if s.generation.load(Ordering::SeqCst) == gen {
            // SAFETY: registered as active under an even, unchanged generation: the job and task
            // counters belong to this generation and stay until we deregister (module protocol).
            let job = unsafe { *s.job.get() };
            if let Some(job) = job {
                let f: &(dyn Fn(usize) + Sync) = unsafe { &*job };
                work(&s, f);
            }
            seen = gen;
        }
        s.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.stop.store(true, Ordering::Release);
        s.generation.fetch_add(2, Ordering::SeqCst);
        let _sleepers = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
        s.wake.notify_all();
    }
}

static POOL: OnceLock<Pool> = OnceLock::new();
static WANTED: AtomicUsize = AtomicUsize::new(0);

/// Set the number of threads of the global pool; effective only before its first use.
/// Returns false if the pool already exists with another size.
pub fn set_num_threads(n: usize) -> bool {
    WANTED.store(n, Ordering::Relaxed);
    POOL.get().is_none_or(|p| p.n_threads == n.max(1))
}

/// The global pool: `set_num_threads`, else `$ARES_THREADS`, else the available parallelism.
pub fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let wanted = WANTED.load(Ordering::Relaxed);
        let n = if wanted > 0 {
            wanted
        } else {
            std::env::var("ARES_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        };
        Pool::new(n)
    })
}

/// Run `f(i)` for i in 0..n_tasks on the global pool.
pub fn parallel_for(n_tasks: usize, f: impl Fn(usize) + Sync) {
    pool().run(n_tasks, &f);
}

/// Split `data` into consecutive pieces of `piece` elements (the last may be shorter) and call
/// `f(piece_index, piece)` for each on the global pool, grouping pieces into a few tasks per thread.
pub fn parallel_chunks_mut<T: Send>(
    data: &mut [T],
    piece: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let piece = piece.max(1);
    let n_pieces = data.len().div_ceil(piece);
    let per_task = n_pieces.div_ceil(pool().n_threads() * 4).max(1);
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    parallel_for(n_pieces.div_ceil(per_task), |t| {
        for p in t * per_task..((t + 1) * per_task).min(n_pieces) {
            let start = p * piece;
            let end = (start + piece).min(len);
            // SAFETY: pieces are disjoint ranges of `data`, each handled by exactly one task, and
            // `data` is borrowed mutably for the whole region.
            let s = unsafe { std::slice::from_raw_parts_mut(base.at(start), end - start) };
            f(p, s);
        }
    });
}

/// A raw pointer that tasks of one parallel region may share, for writing disjoint elements of a
/// buffer the region borrows mutably (every user states why its writes are disjoint).
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: used only to hand disjoint elements or sub-slices to the tasks of one region.
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    #[inline]
    pub(crate) fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_exactly_once_across_many_regions() {
        let p = Pool::new(3);
        for n in [1usize, 2, 5, 64, 1000] {
            let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
            p.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n={n}");
        }
    }

    #[test]
    fn nested_regions_run_inline_and_concurrent_callers_are_serialised() {
        let p = Arc::new(Pool::new(2));
        let total = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (p, total) = (p.clone(), total.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        p.run(8, &|_| {
                            p.run(4, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("caller thread");
        }
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 8 * 4);
    }

    #[test]
    fn chunks_cover_the_slice_once() {
        let mut v = vec![0u32; 1003];
        parallel_chunks_mut(&mut v, 10, |p, s| {
            for x in s.iter_mut() {
                *x += p as u32 + 1;
            }
        });
        for (i, x) in v.iter().enumerate() {
            assert_eq!(*x, (i / 10) as u32 + 1);
        }
    }

    #[test]
    fn a_large_pool_does_not_fall_over() {
        let p = Pool::new(64);
        let sum = AtomicU64::new(0);
        p.run(10_000, &|i| {
            sum.fetch_add(i as u64, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 10_000 * 9_999 / 2);
    }
}
