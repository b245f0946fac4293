//! Work too long for a runtime worker — parsing a large request body,
//! judging a large list result or SSE event — runs on a pool of its own,
//! one thread per core. Jobs wait their turn first come, first served,
//! holding neither a runtime worker nor a thread: a flood of large lists
//! cannot start hundreds of threads (as the runtime's blocking pool
//! would), nor crowd the runtime's workers, and everyone else's small
//! requests, off the CPU.
//!
//! A job whose caller is gone before its turn (a client that hung up)
//! lets its input go at once and is skipped when its turn comes: what
//! waits in the queue for a caller that left is a few hundred bytes at
//! most, not the body or answer it was to judge. One that panics fails alone; its
//! thread goes on. The threads start with the server ([`start`]); should
//! the system refuse every one, jobs go to the runtime's blocking pool as
//! they did before this pool, and the error says so.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use tokio::sync::oneshot;

/// The job was not run to its end: it panicked.
#[derive(Debug)]
pub struct Failed;

type Job = Box<dyn FnOnce() + Send>;

/// A job's answer to come, as a value to keep (in a body, say).
pub type Pending<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Failed>> + Send>>;

struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    waiting: Condvar,
}

static QUEUE: Queue = Queue { jobs: Mutex::new(VecDeque::new()), waiting: Condvar::new() };

/// Threads in the pool: the machine's cores.
pub fn slots() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get())
}

/// Starts the pool's threads (at the latest, the first job does).
pub fn start() {
    threads();
}

/// The pool's threads, started on first asking.
fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        let threads = (0..slots())
            .filter(|n| {
                std::thread::Builder::new().name(format!("toolgate-judge-{n}")).spawn(|| work(&QUEUE)).is_ok()
            })
            .count();
        if threads < slots() {
            tracing::error!(
                started = threads,
                wanted = slots(),
                "the system refused threads for judging large bodies and answers{}",
                if threads == 0 { ": they are judged on the runtime's blocking pool instead" } else { "" }
            );
        }
        threads
    })
}

fn work(queue: &Queue) {
    loop {
        let job = {
            let mut jobs = queue.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                match jobs.pop_front() {
                    Some(job) => break job,
                    None => jobs = queue.waiting.wait(jobs).unwrap_or_else(PoisonError::into_inner),
                }
            }
        };
        // A panic drops the job's answer channel: its caller hears `Failed`.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// Runs `job` on the pool when its turn comes.
pub async fn run<T, F>(job: F) -> Result<T, Failed>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // The job (and the input it holds) sits in a slot both ends reach: the
    // pool takes it out to run it; a caller gone first takes it out to drop it.
    let slot = Arc::new(Mutex::new(Some(job)));
    let _abandon = Abandon(slot.clone());
    if threads() == 0 {
        let ran = tokio::task::spawn_blocking(move || take(&slot).map(|job| job())).await;
        return ran.ok().flatten().ok_or(Failed);
    }
    let (answer, answered) = oneshot::channel();
    let job: Job = Box::new(move || {
        if let Some(job) = take(&slot)
            && !answer.is_closed()
        {
            let _ = answer.send(job());
        }
    });
    QUEUE.jobs.lock().unwrap_or_else(PoisonError::into_inner).push_back(job);
    QUEUE.waiting.notify_one();
    answered.await.map_err(|_| Failed)
}

fn take<F>(slot: &Mutex<Option<F>>) -> Option<F> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// Drops a job not yet started when its caller goes.
struct Abandon<F>(Arc<Mutex<Option<F>>>);

impl<F> Drop for Abandon<F> {
    fn drop(&mut self) {
        drop(take(&self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn no_more_jobs_than_cores_run_at_once_and_a_panic_fails_alone() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs = (0..slots() * 4 + 3).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            tokio::spawn(run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
            }))
        });
        for job in jobs.collect::<Vec<_>>() {
            assert!(job.await.unwrap().is_ok());
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most >= 1 && most <= slots(), "{most} jobs at once, {} threads", slots());

        let panicked = run(|| -> usize { panic!("a job that panics") }).await;
        assert!(panicked.is_err());
        for n in 0..slots() * 2 {
            assert_eq!(run(move || n * 2).await.unwrap(), n * 2, "the pool goes on after a panic");
        }
    }

    #[tokio::test]
    async fn a_job_whose_caller_is_gone_lets_its_input_go_at_once_and_is_skipped() {
        // Every thread busy, then a job queued behind them and abandoned.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let started = Arc::new(AtomicUsize::new(0));
        let busy: Vec<_> = (0..slots())
            .map(|_| {
                let (released, started) = (released.clone(), started.clone());
                tokio::spawn(run(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    let _ = released.lock().unwrap().recv_timeout(Duration::from_secs(10));
                }))
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while started.load(Ordering::SeqCst) < slots() {
            assert!(std::time::Instant::now() < deadline, "the pool's threads did not all start");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = ran.clone();
        let input = Arc::new(vec![0u8; 1 << 20]);
        let held = input.clone();
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            run(move || counted.fetch_add(held.len(), Ordering::SeqCst)),
        )
        .await;
        assert!(abandoned.is_err(), "it waited its turn");
        assert_eq!(Arc::strong_count(&input), 1, "the abandoned job's input was let go before its turn");
        for _ in 0..slots() {
            release.send(()).unwrap();
        }
        for job in busy {
            job.await.unwrap().unwrap();
        }
        // The pool has moved on past the abandoned job.
        assert_eq!(run(|| 7).await.unwrap(), 7);
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the abandoned job never ran");
    }
}
