package grpctunnel

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Why an exchange failed when its session ended. gRPC ends the streams of
// a session that ends (the gateway closed it: its liveness watch, a
// revoked connector; the connection broke: the agent gone, the gateway
// stopping) by cancelling them, and an exchange reading from one got
// only "rpc error: code = Canceled desc = context canceled", which the
// gateway logged as the reason a response broke off. A stream of an
// ended session fails with the session's end reason instead (endError),
// as QUIC's and yamux's streams do.

// sessionEndWait bounds how long a stream that broke with its connection
// waits for the session's end reason: the control stream's handler
// closes the session as soon as gRPC ends the control stream too, at the
// same moment.
const sessionEndWait = time.Second

// endedError is the error of a stream whose session ended: it says why,
// and wraps the reason and the stream's own error (unless that only says
// the stream was cancelled: then errors.Is(err, context.Canceled), which
// the gateway takes for its client gone, is false).
type endedError struct {
	reason error // why the session ended (session.endReason)
	err    error // the stream's
}

func (e *endedError) Error() string {
	if cancelled(e.err) {
		return "tunnel session ended: " + e.reason.Error()
	}
	return "tunnel session ended: " + e.reason.Error() + " (" + e.err.Error() + ")"
}

func (e *endedError) Unwrap() []error {
	var errs []error
	// A reason that wraps a context's error (a store call that timed out,
	// in a revocation check) must not make the exchange look like its
	// client gone or its backend slow: it is said, not unwrapped.
	if !errors.Is(e.reason, context.Canceled) && !errors.Is(e.reason, context.DeadlineExceeded) {
		errs = append(errs, e.reason)
	}
	if !cancelled(e.err) {
		errs = append(errs, e.err)
	}
	return errs
}

// cancelled reports whether err says only that a stream was cancelled.
func cancelled(err error) bool {
	return errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled
}

// endError is err, an error of one of the session's streams, naming why
// the session ended when it did (or ends with the stream: its connection
// is gone); err as it is otherwise (the stream alone broke).
func (ss *session) endError(err error) error {
	if err == nil || !ss.ended() {
		return err
	}
	return &endedError{reason: ss.endReason(), err: err}
}

// ended reports whether the session ended, waiting for its end (at most
// sessionEndWait) when its connection is gone.
func (ss *session) ended() bool {
	select {
	case <-ss.done:
		return true
	default:
	}
	if !ss.connGone() {
		return false
	}
	t := time.NewTimer(sessionEndWait)
	defer t.Stop()
	select {
	case <-ss.done:
		return true
	case <-t.C:
		return false
	}
}

// connGone reports whether the session's connection or its control
// stream ended. gRPC closes the connection before it cancels the streams
// on it, in no particular order, so a stream that broke with its
// connection finds it closed even when the control stream is not
// cancelled yet.
func (ss *session) connGone() bool {
	if ss.cs.Context().Err() != nil {
		return true
	}
	if ss.conn == nil {
		return false
	}
	select {
	case <-ss.conn.done:
		return true
	default:
		return false
	}
}

// endReason says why the session ended; done is closed. The reason it
// was closed with (its liveness watch's, the gateway's), or why its
// control stream ended (the agent gone, the gateway stopping), as the
// session's log line says it.
func (ss *session) endReason() error {
	if ss.reason != nil {
		return ss.reason
	}
	return errors.New(ss.srv.closedReason())
}
