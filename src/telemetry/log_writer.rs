//! The log's writer: a worker formats its line and hands it to a bounded
//! queue; one dedicated thread writes the queue to stderr. No worker ever
//! waits on stderr (a slow pipe, a stalled collector, the stderr lock):
//! when the queue is full the line is dropped and counted, the count is
//! exported as `toolgate_log_lines_dropped_total`, and the writer says how
//! many were lost as soon as it catches up.
//!
//! A busy proxy logs thousands of lines a second. Waking the writer for
//! each would cost a worker a system call and the machine two context
//! switches per request, so the writer is woken only by the first line
//! after a quiet spell; while lines keep coming it sleeps [`GATHER`]
//! between writes, and writes all that came meanwhile at once.

use prometheus_client::metrics::counter::Counter;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

/// Lines held for the writer at most (about 3 MiB of typical lines).
pub const QUEUE_LINES: usize = 8192;
/// While lines keep coming, how long the writer gathers them between
/// writes: the most a line waits in the queue when the writer is busy.
pub const GATHER: Duration = Duration::from_millis(10);

/// Lines dropped because the queue was full, since the process started:
/// the counter the metrics registry exports.
pub fn dropped_counter() -> &'static Counter {
    static DROPPED: OnceLock<Counter> = OnceLock::new();
    DROPPED.get_or_init(Counter::default)
}

enum Message {
    Line(Vec<u8>),
    /// Everything queued before this is written; answer on the channel.
    Flush(SyncSender<()>),
}

/// How a line reaches the writer's attention.
struct Writer {
    thread: Thread,
    /// Set by the writer when it found the queue empty after a gather and
    /// sleeps until woken; only then does a new line wake it.
    asleep: Arc<AtomicBool>,
}

impl Writer {
    /// After queueing a line: wakes the writer if it sleeps for want of lines.
    fn nudge(&self) {
        // Pairs with the writer's fence between announcing its sleep and
        // looking at the queue a last time: either it sees this line, or
        // this sees it asleep.
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::Relaxed) {
            self.thread.unpark();
        }
    }

    /// Wakes the writer whatever it is doing (a flush, a full queue).
    fn wake(&self) {
        self.asleep.store(false, Ordering::Relaxed);
        self.thread.unpark();
    }
}

/// The last handle gone: the writer finds the queue closed, writes what is
/// left and ends, rather than sleep for good.
impl Drop for Writer {
    fn drop(&mut self) {
        self.thread.unpark();
    }
}

/// The `MakeWriter` given to the subscriber.
#[derive(Clone)]
pub struct QueuedWriter {
    queue: SyncSender<Message>,
    dropped: Counter,
    writer: Arc<Writer>,
}

/// Flushes what is queued when dropped (at the end of `main`).
pub struct FlushOnDrop {
    queue: SyncSender<Message>,
    writer: Arc<Writer>,
}

/// Starts the writer thread on `out`, counting dropped lines in `dropped`
/// ([`dropped_counter`] for the process's log). `None` when the system
/// refused a thread.
pub fn start(out: impl Write + Send + 'static, dropped: Counter) -> Option<(QueuedWriter, FlushOnDrop)> {
    let (queue, lines) = std::sync::mpsc::sync_channel(QUEUE_LINES);
    let counted = dropped.clone();
    let asleep = Arc::new(AtomicBool::new(false));
    let flag = asleep.clone();
    let thread = std::thread::Builder::new()
        .name("toolgate-log".into())
        .spawn(move || write_lines(lines, out, &counted, &flag))
        .ok()?
        .thread()
        .clone();
    let writer = Arc::new(Writer { thread, asleep });
    Some((
        QueuedWriter { queue: queue.clone(), dropped, writer: writer.clone() },
        FlushOnDrop { queue, writer },
    ))
}

fn write_lines(lines: Receiver<Message>, out: impl Write, dropped: &Counter, asleep: &AtomicBool) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut reported = 0;
    // Says how many lines were lost since it last said so.
    let mut report = |out: &mut std::io::BufWriter<_>| {
        let now = dropped.get();
        if now != reported {
            let _ = writeln!(
                out,
                "toolgate: {} log lines were dropped: the log's reader did not keep up ({now} in all)",
                now - reported
            );
            reported = now;
        }
    };
    let mut pending = None;
    loop {
        // Write all that is waiting, then flush once.
        let mut wrote = false;
        loop {
            let message = match pending.take().map_or_else(|| lines.try_recv(), Ok) {
                Ok(message) => message,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    report(&mut out);
                    let _ = out.flush();
                    return;
                }
            };
            wrote = true;
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Message::Flush(done) => {
                    report(&mut out);
                    let _ = out.flush();
                    let _ = done.try_send(());
                }
            }
        }
        if wrote {
            report(&mut out);
            let _ = out.flush();
            // More is likely on its way: gather it rather than be woken for
            // each line.
            std::thread::park_timeout(GATHER);
            continue;
        }
        // Nothing came while gathering: sleep until a line comes.
        asleep.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        match lines.try_recv() {
            Ok(message) => pending = Some(message),
            Err(TryRecvError::Empty) => std::thread::park(),
            Err(TryRecvError::Disconnected) => return,
        }
        asleep.store(false, Ordering::Relaxed);
    }
}

impl FlushOnDrop {
    /// Waits (up to `limit`) until what was queued is written.
    /// An output that never moves cannot hold the caller past `limit`.
    pub fn flush(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        let (done, written) = std::sync::mpsc::sync_channel(1);
        let mut message = Message::Flush(done);
        loop {
            let sent = self.queue.try_send(message);
            self.writer.wake();
            match sent {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => message = back,
            }
            if std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = written.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.flush(Duration::from_secs(2));
    }
}

/// One line, sent to the queue when the subscriber is done writing it.
pub struct Line<'a> {
    to: &'a QueuedWriter,
    buffer: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Line<'_> {
    /// The line's bytes so far: what is added is queued when it drops.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buffer);
        let to = self.to;
        match to.queue.try_send(Message::Line(line)) {
            Ok(()) => to.writer.nudge(),
            // Full: lost, counted, and the writer told at once.
            Err(TrySendError::Full(_)) => {
                to.dropped.inc();
                to.writer.wake();
            }
            // The writer died: lost, counted.
            Err(TrySendError::Disconnected(_)) => {
                to.dropped.inc();
            }
        }
    }
}

impl QueuedWriter {
    /// An empty line with room for `capacity` bytes.
    pub fn line(&self, capacity: usize) -> Line<'_> {
        Line { to: self, buffer: Vec::with_capacity(capacity) }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        self.line(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// An output that blocks until released, like a pipe nobody reads.
    #[derive(Clone)]
    struct Stalled {
        gate: Arc<Mutex<()>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _held = self.gate.lock().map_err(|_| std::io::Error::other("poisoned"))?;
            self.written.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_instead_of_blocking() {
        let gate = Arc::new(Mutex::new(()));
        let written = Arc::new(Mutex::new(Vec::new()));
        let held = gate.lock().unwrap();
        let dropped = Counter::default();
        let (writer, flusher) =
            start(Stalled { gate: gate.clone(), written: written.clone() }, dropped.clone())
                .expect("writer thread");
        // The first line reaches the thread, which then blocks writing it
        // (the buffer is bigger than the line, so force it with a big one).
        let started = std::time::Instant::now();
        for n in 0..QUEUE_LINES * 2 + 100 {
            let mut line = writer.make_writer();
            let text = if n == 0 { "x".repeat(70 * 1024) } else { format!("line {n}") };
            writeln!(line, "{text}").unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "writing never waits on the output");
        let lost = dropped.get();
        assert!(lost >= QUEUE_LINES as u64, "{lost} dropped");
        drop(held);
        flusher.flush(Duration::from_secs(10));
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert!(text.contains("line 1\n"), "queued lines are written once the output moves");
        assert!(text.contains(&format!("{lost} log lines were dropped")), "the loss is reported");
    }

    #[test]
    fn flushing_a_stalled_output_with_a_full_queue_gives_up_in_time() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let out = Stalled { gate: gate.clone(), written: Arc::new(Mutex::new(Vec::new())) };
        let (writer, flusher) = start(out, Counter::default()).expect("writer thread");
        for n in 0..QUEUE_LINES + 10 {
            let mut line = writer.make_writer();
            let text = if n == 0 { "x".repeat(70 * 1024) } else { format!("line {n}") };
            writeln!(line, "{text}").unwrap();
        }
        let started = std::time::Instant::now();
        flusher.flush(Duration::from_millis(300));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
        drop(held);
    }

    /// An output that counts the writes it is given.
    #[derive(Clone, Default)]
    struct Counted {
        writes: Arc<Mutex<usize>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Counted {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            *self.writes.lock().map_err(|_| std::io::Error::other("poisoned"))? += 1;
            self.written.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_steady_stream_of_lines_is_written_in_gathers_not_line_by_line() {
        let out = Counted::default();
        let (writer, flusher) = start(out.clone(), Counter::default()).expect("writer thread");
        // A line every 100 µs or so, as a busy proxy logs.
        let started = std::time::Instant::now();
        let mut sent = 0;
        while started.elapsed() < Duration::from_millis(300) {
            writeln!(writer.make_writer(), "line {sent}").unwrap();
            sent += 1;
            std::thread::sleep(Duration::from_micros(100));
        }
        let elapsed = started.elapsed();
        drop(flusher);
        let writes = *out.writes.lock().unwrap();
        // Every write after the first follows a gather, or a quiet spell of
        // as long (a line that came as the writer went to sleep may cut the
        // next gather short); one more for the flush.
        let most = 2 * (elapsed.as_millis() / GATHER.as_millis()) as usize + 3;
        assert!(writes <= most, "{writes} writes for {sent} lines in {elapsed:?}: at most {most}");
        let text = String::from_utf8(out.written.lock().unwrap().clone()).unwrap();
        let expected: String = (0..sent).map(|n| format!("line {n}\n")).collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn a_line_after_a_quiet_spell_is_written_without_a_flush() {
        let out = Counted::default();
        let (writer, _flusher) = start(out.clone(), Counter::default()).expect("writer thread");
        for n in 0..20 {
            // Longer than a gather: the writer has gone to sleep for want of lines.
            std::thread::sleep(GATHER * 3);
            writeln!(writer.make_writer(), "line {n}").unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let expected = format!("line {n}\n");
            while !String::from_utf8_lossy(&out.written.lock().unwrap()).ends_with(&expected) {
                assert!(std::time::Instant::now() < deadline, "line {n} was never written");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// An output that says when it is dropped (when the writer ends).
    struct Dropped(Arc<Mutex<bool>>);

    impl Write for Dropped {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Drop for Dropped {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = true;
        }
    }

    #[test]
    fn the_writer_ends_when_every_handle_is_gone() {
        let ended = Arc::new(Mutex::new(false));
        let (writer, flusher) = start(Dropped(ended.clone()), Counter::default()).expect("writer thread");
        writeln!(writer.make_writer(), "a line").unwrap();
        drop(flusher);
        // Long enough for the writer to sleep for want of lines.
        std::thread::sleep(GATHER * 3);
        drop(writer);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !*ended.lock().unwrap() {
            assert!(std::time::Instant::now() < deadline, "the writer sleeps on with nobody to write for");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn lines_arrive_whole_and_in_order() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let out = Stalled { gate: Arc::new(Mutex::new(())), written: written.clone() };
        let (writer, flusher) = start(out, Counter::default()).expect("writer thread");
        for n in 0..1000 {
            let mut line = writer.make_writer();
            write!(line, "part {n} ").unwrap();
            writeln!(line, "end {n}").unwrap();
        }
        drop(flusher);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|n| format!("part {n} end {n}\n")).collect();
        assert_eq!(text, expected);
    }
}
