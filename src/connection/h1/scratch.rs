//! Reads from a client's socket into one scratch buffer per thread, so
//! that a connection's own buffer holds only what arrived, and a read that
//! empties the socket tells the runtime so (no read that finds nothing
//! before the next wait); and whether bytes wait unread, asked of the
//! kernel.

use super::READ_SIZE;
use bytes::BytesMut;
use std::io;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Reads up to `want` bytes (at most [`READ_SIZE`]) from the socket into
/// the thread's scratch buffer, and hands them to `take`: a connection's
/// own buffer is then sized to what arrived, and nothing is zeroed first.
///
/// A read that leaves room unfilled has emptied the socket, and with an
/// edge-triggered poller (epoll, kqueue) anything arriving after it is
/// signalled afresh: the runtime's readiness is then cleared, as of before
/// the read (a signal that came during it stands), so that the next wait
/// (for the client's next request, or its departure while an answer is
/// awaited) costs no read that finds nothing. tokio's `poll_read` does
/// the same.
pub(super) fn read_scratch(io: &TcpStream, want: usize, take: impl FnOnce(&[u8])) -> io::Result<usize> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    }
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        scratch.reserve(READ_SIZE);
        let want = want.clamp(1, READ_SIZE);
        let mut read = 0;
        let drained = io.try_io(Interest::READABLE, || {
            read = io.try_read_buf(&mut bytes::BufMut::limit(&mut *scratch, want))?;
            if EDGE_TRIGGERED && 0 < read && read < want {
                // Not an error: the runtime's signal to clear readiness.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        match drained {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock && read > 0 => {}
            other => other?,
        }
        take(&scratch[..read]);
        Ok(read)
    })
}

/// Whether the client has sent bytes that are not read yet. The kernel is
/// asked (a peek), not the runtime: a short read cleared its readiness,
/// and it may not have seen what came since.
pub(super) fn has_unread(io: &TcpStream) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(io).peek(&mut probe), Ok(read) if read > 0)
}

/// Whether the runtime's poller signals each arrival (epoll, kqueue), so
/// that a short read shows the socket empty.
const EDGE_TRIGGERED: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "macos",
    target_os = "ios",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
));

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Context;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[tokio::test]
    async fn a_short_read_clears_readiness_and_no_arrival_after_it_is_missed() -> TestResult {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut client = TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        let ready_now = |io: &TcpStream| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            io.poll_read_ready(&mut cx).is_ready()
        };
        // A read that does not wait for the runtime to see the bytes.
        let read_now = |io: &TcpStream| {
            let mut got = [0u8; 8];
            let socket = socket2::SockRef::from(io);
            let read = std::io::Read::read(&mut &*socket, &mut got)?;
            Ok::<_, io::Error>(got[..read].to_vec())
        };
        let read = |io: &TcpStream, want: usize| {
            let mut got = Vec::new();
            read_scratch(io, want, |bytes| got.extend_from_slice(bytes)).map(|_| got)
        };

        // A read that fills what it was allowed says nothing of what is left.
        client.write_all(b"abcdef").await?;
        server.readable().await?;
        assert_eq!(read(&server, 3)?, b"abc");
        assert!(ready_now(&server), "readiness was given up with bytes possibly left");
        // One that does not has emptied the socket: waiting costs no read.
        assert_eq!(read(&server, READ_SIZE)?, b"def");
        assert!(!ready_now(&server), "the socket is taken for readable after it was emptied");

        // What arrives next is signalled afresh, the end of the stream too.
        client.write_all(b"gh").await?;
        tokio::time::timeout(Duration::from_secs(5), server.readable()).await??;
        assert_eq!(read(&server, READ_SIZE)?, b"gh");
        // Bytes the runtime has not seen yet (this task has not yielded to
        // it since) are still found unread: a closing connection lingers
        // for them rather than resetting the client.
        assert!(!has_unread(&server));
        client.write_all(b"i").await?;
        assert!(has_unread(&server), "bytes sent after a short read were taken for none");
        assert_eq!(read_now(&server)?, b"i");
        client.shutdown().await?;
        tokio::time::timeout(Duration::from_secs(5), server.readable()).await??;
        assert_eq!(read(&server, READ_SIZE)?, b"");
        Ok(())
    }
}
