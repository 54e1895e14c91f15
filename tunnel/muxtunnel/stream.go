package muxtunnel

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/sallyport/sallyport/tunnel"
)

// stream is a tunnel.Stream on a RawStream: one exchange, then the stream
// is closed (see tunnel.proto, M3).
//
// Who closes: the gateway closes first, once it has read the agent's `end`
// and sent its own; the agent closes its side when it reads the gateway's
// close. So the agent never ends a stream whose last bytes still wait at
// the gateway for a slow client (yamux would reset such a stream after its
// close timeout and drop them). Where a close is reliable (QUIC, see
// ReliableCloser) the agent closes its side right after its `end` instead.
type stream struct {
	raw     RawStream
	gateway bool   // the gateway end
	early   bool   // raw is a ReliableCloser: the agent closes right after its end
	release func() // frees the session's stream slot; nil on the agent

	sawEnd   bool    // the last frame received had `end`; owned by Recv
	rbuf     *[]byte // read buffer the last frame's data aliases; owned by Recv
	finished atomic.Bool
	rawOnce  sync.Once // the one close or reset of raw
	relOnce  sync.Once
}

var errFinished = errors.New("tunnel stream already finished")

func (s *stream) Send(f *tunnel.Frame) error {
	if s.finished.Load() {
		return errFinished
	}
	return writeMsg(s.raw, f, tunnel.MaxFrameSize)
}

// Recv returns the next frame. The end of the stream is io.EOF only after
// the peer's `end`; before it, the peer gave up on the exchange: that is a
// reset (transports without a reset frame end the stream instead).
func (s *stream) Recv() (*tunnel.Frame, error) {
	// The caller is done with the previous frame's data (tunnel.Stream):
	// its buffer goes back to the pool. The last one, at the end of the
	// exchange, is left to the garbage collector, since Finish may run
	// while the reader still copies.
	if s.rbuf != nil {
		putBuf(s.rbuf)
		s.rbuf = nil
	}
	f, buf, err := readFrame(s.raw)
	if err != nil {
		if !errors.Is(err, io.EOF) {
			return nil, err
		}
		if !s.sawEnd {
			return nil, ErrStreamReset
		}
		if !s.gateway {
			// The gateway is done with the exchange: end ours too.
			s.finished.Store(true)
			s.rawOnce.Do(func() { _ = s.raw.CloseWrite() })
		}
		return nil, io.EOF
	}
	if s.finished.Load() && !s.gateway {
		// One exchange per stream: after ours ended cleanly only the
		// gateway's close may follow.
		s.abort()
		return nil, errors.Join(tunnel.ErrMalformed, errors.New("a second exchange on one stream"))
	}
	s.sawEnd = f.End
	s.rbuf = buf
	return f, nil
}

// Finish(true) means both sides sent `end`: the gateway closes its sending
// direction and stops reading; the agent waits for the gateway's close
// (Recv). Finish(false) resets the stream. The first call decides.
func (s *stream) Finish(clean bool) {
	if !s.finished.CompareAndSwap(false, true) {
		return
	}
	switch {
	case !clean:
		s.abort()
	case s.gateway:
		s.rawOnce.Do(func() {
			_ = s.raw.CloseWrite()
			s.raw.CloseRead()
		})
	case s.early:
		// The agent's end is written: close with it (ReliableCloser). The
		// gateway's close still ends the exchange in Recv.
		s.rawOnce.Do(func() { _ = s.raw.CloseWrite() })
	}
	if s.release != nil {
		s.relOnce.Do(s.release)
	}
}

// newStream wraps raw; gateway tells which end this is.
func newStream(raw RawStream, gateway bool, release func()) *stream {
	st := &stream{raw: raw, gateway: gateway, release: release}
	if rc, ok := raw.(ReliableCloser); ok && rc.CloseDeliversAll() {
		st.early = true
	}
	return st
}

// abort resets the stream unless it was closed already.
func (s *stream) abort() { s.rawOnce.Do(s.raw.Reset) }
