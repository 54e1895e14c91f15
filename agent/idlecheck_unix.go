//go:build unix

package agent

import (
	"io"
	"syscall"

	"github.com/sallyport/sallyport/internal/rawsock"
)

// rawWaits: flushing a request inside a RawConn wait for its response
// (h1Conn.flush) and idleCheck work here.
const rawWaits = true

// idleCheck reads the socket fd without waiting, before a request is
// written on a reused connection: nil when nothing is there (EAGAIN);
// errUnsolicited for bytes, io.EOF when the backend closed the connection
// while it was idle. Either error leaves nothing sent and the request is
// retried on a new connection (h1Sync.RoundTrip). The read costs nothing on
// the fast path: flushThenWait makes it in place of the read that would
// otherwise find no response yet. It is made as the connection's own reads
// are (rawsock.ReadFD).
func idleCheck(fd uintptr) error {
	var b [1]byte
	for {
		n, err := rawsock.ReadFD(fd, b[:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return nil
		case err != nil:
			return err
		case n > 0:
			return errUnsolicited
		default:
			return io.EOF
		}
	}
}
