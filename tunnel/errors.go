package tunnel

import (
	"errors"
	"fmt"
)

// An enrollment answer of a gateway that refused it before it spent the
// token carries a google.rpc.ErrorInfo with ErrorDomain and
// ReasonTokenUnspent, so the agent knows its token still holds that use
// whatever the message says. Gateways before it said so only in the
// message ("the token was not spent").
const (
	ErrorDomain        = "sallyport.dev"
	ReasonTokenUnspent = "TOKEN_NOT_SPENT"
)

// ErrNotSent is wrapped by RoundTrip errors that happened before any byte of
// the request left the gateway: the exchange may be retried on another
// stream or session.
var ErrNotSent = errors.New("request not sent")

// ErrNoResponse is wrapped by RoundTrip errors of an exchange whose stream
// (or its session: the agent's connection) broke after the request was
// sent and before the response head came, without a timeout or the
// client's cancellation. The backend may or may not have received the
// request: only a request that is safe to repeat (an idempotent one
// without a body) may be sent again.
var ErrNoResponse = errors.New("stream broke before the response head")

// ErrHeadTimeout is returned by RoundTrip when the backend sent no response
// head within Options.HeadTimeout.
var ErrHeadTimeout = errors.New("no response head from the backend in time")

// ExchangeError is an error the agent reported for an exchange, with one of
// the X-Sallyport-Error codes.
type ExchangeError struct {
	Code    string
	Message string
}

func (e *ExchangeError) Error() string {
	return fmt.Sprintf("agent: %s: %s", e.Code, e.Message)
}

// notSentError marks a failure before the request head was handed to the
// transport.
type notSentError struct{ err error }

func (e *notSentError) Error() string        { return e.err.Error() }
func (e *notSentError) Unwrap() error        { return e.err }
func (e *notSentError) Is(target error) bool { return target == ErrNotSent }

// noResponseError marks a failure that ErrNoResponse describes.
type noResponseError struct{ err error }

func (e *noResponseError) Error() string        { return e.err.Error() }
func (e *noResponseError) Unwrap() error        { return e.err }
func (e *noResponseError) Is(target error) bool { return target == ErrNoResponse }

// ClientBodyError is returned when reading the client's request body failed
// (the client went away or sent a malformed body) before the request could
// be forwarded.
type ClientBodyError struct{ Err error }

func (e *ClientBodyError) Error() string { return "read request body: " + e.Err.Error() }
func (e *ClientBodyError) Unwrap() error { return e.Err }
