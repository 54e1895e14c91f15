package tunnel

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// Informational responses (protocol version 3). A backend may answer with
// informational responses before its final one: 103 Early Hints, whose
// Link headers let a browser fetch what the page will need, or 102
// Processing. A proxy must pass them on (RFC 9110 section 15.2) unless its
// client speaks HTTP/1.0. When the gateway asks for them in the request
// head (RequestHead.informational), the agent sends each as
// Frame{informational} before the response head; the gateway hands them to
// Options.Informational.
//
// Both sides bound them as net/http's client bounds those that nobody
// looks at (by their header bytes): a backend that sends 1xx responses
// without end must not make the agent, the gateway or the client busy
// without end. The limits count every informational response the
// backend's client reads, 100 Continue included, though only 102–199 but
// 101 are relayed: 100 Continue is the gateway's own server's business (it
// answers a client's Expect), and 101 is a final response.

const (
	// MaxInformational is the most informational responses one exchange
	// may have. Real backends send one or two (a 103 with the page's
	// assets, a 100 Continue).
	MaxInformational = 8
	// MaxInformationalBytes bounds the header fields of all informational
	// responses of one exchange together: name and value bytes plus 4 per
	// field (": " and CRLF, as HTTP/1.1 writes them).
	MaxInformationalBytes = 64 << 10
)

// InformationalLimitError fails an exchange whose backend sent more
// informational responses, or more header bytes in them, than
// MaxInformational and MaxInformationalBytes allow.
type InformationalLimitError struct {
	Count int // informational responses read, the one over the limit included
	Bytes int // their header bytes
}

func (e *InformationalLimitError) Error() string {
	return fmt.Sprintf("the backend sent %d informational (1xx) responses with %d bytes of headers before its final response; "+
		"at most %d, with %d bytes of headers in all, are relayed per exchange",
		e.Count, e.Bytes, MaxInformational, MaxInformationalBytes)
}

// informationalBudget counts the informational responses of one exchange
// against the limits.
type informationalBudget struct {
	n, bytes int
}

// take counts one informational response with size header bytes.
func (b *informationalBudget) take(size int) error {
	b.n++
	b.bytes += size
	if b.n > MaxInformational || b.bytes > MaxInformationalBytes {
		return &InformationalLimitError{Count: b.n, Bytes: b.bytes}
	}
	return nil
}

// relayedInformational reports whether an informational status goes to the
// gateway: 102–199 but 101.
func relayedInformational(code int) bool {
	return code >= 102 && code <= 199 && code != http.StatusSwitchingProtocols
}

// headerSize is the size of h as MaxInformationalBytes counts it.
func headerSize(h http.Header) int {
	n := 0
	for k, vv := range h {
		for _, v := range vv {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// wireHeaderSize is headerSize of headers as they arrived.
func wireHeaderSize(hs []*tunnelv1.Header) int {
	n := 0
	for _, h := range hs {
		for _, v := range h.GetValues() {
			n += len(h.GetName()) + len(v) + 4
		}
	}
	return n
}

// informationalFromHead validates an informational response from the
// agent.
func informationalFromHead(h *tunnelv1.ResponseHead) (int, http.Header, error) {
	code := int(h.GetStatus())
	if !relayedInformational(code) {
		return 0, nil, malformed("informational response with status %d (only 102–199 but 101 are relayed)", code)
	}
	if h.GetContentLength() != 0 || len(h.GetTrailerNames()) > 0 {
		return 0, nil, malformed("informational response %d with a content length or trailers", code)
	}
	header, err := headersFromWire(h.GetHeaders(), "informational response")
	if err != nil {
		return 0, nil, err
	}
	return code, header, nil
}

// The agent's side.

// RelayInformational passes an informational response of the backend to
// the gateway. A backend client that Server.Backend returned calls it with
// its request's context for each informational response it reads before
// the final one; net/http's clients get an httptrace.ClientTrace that does
// it (see InformationalRelayer).
//
// It returns nil when the response was sent or dropped: 100 Continue
// (the gateway's own server answers a client's Expect), and every
// response of an exchange whose gateway did not ask for them (a gateway of
// protocol version 2, an HTTP/1.0 client) or that is no Server's. An error
// must fail the request: an *InformationalLimitError when the backend sent
// more than the limits allow, or the tunnel's when sending failed.
func RelayInformational(ctx context.Context, code int, header http.Header) error {
	switch r := ctx.Value(informationalKey{}).(type) {
	case *serverExchange:
		return r.relayInformational(code, header)
	case informationalFunc:
		return r(code, header)
	}
	return nil
}

// informationalFunc is the relay of WithInformational.
type informationalFunc func(code int, header http.Header) error

// WithInformational returns a copy of ctx whose RelayInformational calls
// relay, for a backend request that is not a Server's (tests of backend
// clients). relay sees every informational response, 100 included; it is
// called with the limits unchecked.
func WithInformational(ctx context.Context, relay func(code int, header http.Header) error) context.Context {
	return context.WithValue(ctx, informationalKey{}, informationalFunc(relay))
}

// InformationalRelayer is a backend client that calls RelayInformational
// itself for the requests it reports (the agent's synchronous HTTP/1.1
// client): Server does not give those the httptrace.ClientTrace that
// makes net/http's clients call it, which costs four allocations.
type InformationalRelayer interface {
	RelaysInformational(req *http.Request) bool
}

// informationalKey is the context key of the exchange whose backend
// request may relay informational responses.
type informationalKey struct{}

// informationalContext is the backend request's context of an exchange
// whose gateway asked for informational responses: the exchange's own,
// which also knows the exchange (RelayInformational). It lives in the
// serverExchange, so that it costs no allocation.
type informationalContext struct {
	context.Context
	ex *serverExchange
}

func (c *informationalContext) Value(key any) any {
	if key == (informationalKey{}) {
		return c.ex
	}
	return c.Context.Value(key)
}

// preHead orders the frames that other goroutines than the exchange's may
// send before its response head: the go-ahead for a held-back body (the
// body's reader) and informational responses (net/http's read loops). Once
// the backend's RoundTrip returned, close makes sure that none is being
// sent, and none follows.
type preHead struct {
	mu     sync.Mutex
	late   bool                // the response began: nothing may go before it any more; guarded by mu
	budget informationalBudget // guarded by mu
}

func (p *preHead) close() {
	p.mu.Lock()
	p.late = true
	p.mu.Unlock()
}

// relayInformational is RelayInformational for ex.
func (ex *serverExchange) relayInformational(code int, header http.Header) error {
	ex.pre.mu.Lock()
	defer ex.pre.mu.Unlock()
	if ex.pre.late {
		// The RoundTrip that read it has returned (it failed, or the
		// exchange was cancelled): nothing may go before the answer now.
		return nil
	}
	if err := ex.pre.budget.take(headerSize(header)); err != nil {
		return err
	}
	if !relayedInformational(code) {
		return nil
	}
	f := &Frame{Informational: &tunnelv1.ResponseHead{Status: int32(code), Headers: headersToWire(header, false)}}
	if err := ex.st.Send(f); err != nil {
		return fmt.Errorf("relay informational response %d to the gateway: %w", code, err)
	}
	return nil
}

// traceInformational returns req with a client trace that relays the
// informational responses net/http's clients read.
func (ex *serverExchange) traceInformational(req *http.Request) *http.Request {
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
		return ex.relayInformational(code, http.Header(header))
	}}
	return req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
}

// relaysInformational reports whether rt passes the informational
// responses of req on by itself.
func relaysInformational(rt http.RoundTripper, req *http.Request) bool {
	r, ok := rt.(InformationalRelayer)
	return ok && r.RelaysInformational(req)
}

// The gateway's side.

// InformationalWriter takes the informational responses of an exchange
// (Options.Informational).
type InformationalWriter interface {
	WriteInformational(code int, header http.Header)
}

// recvHead receives the agent's frames up to the response head, which it
// returns (or the error that ended the wait): before it may come the
// go-ahead for a held-back body (held: see awaitGoAhead) and informational
// responses, which go to o.Informational. A held-back body that the head
// comes without is closed unread.
func (ex *clientExchange) recvHead(held bool, o *Options) (*Frame, error) {
	var budget informationalBudget
	for {
		f, err := ex.st.Recv()
		switch {
		case err != nil:
		case f.Informational != nil:
			if err := ex.informational(f, o, &budget); err != nil {
				if held {
					ex.req.Body.Close()
				}
				return nil, err
			}
			continue
		case held && f.SendBody:
			if err := ex.goAhead(f); err != nil {
				return nil, err
			}
			held = false
			continue
		}
		if held {
			ex.req.Body.Close()
		}
		return f, err
	}
}

// informational checks an informational response from the agent and hands
// it to o.Informational.
func (ex *clientExchange) informational(f *Frame, o *Options, budget *informationalBudget) error {
	if o.Informational == nil {
		return malformed("the agent sent an informational response that was not asked for")
	}
	if f.Response != nil || f.Error != nil || len(f.Data) > 0 || f.End || len(f.Trailers) > 0 || f.SendBody {
		return malformed("an informational response came with other fields")
	}
	if err := budget.take(wireHeaderSize(f.Informational.GetHeaders())); err != nil {
		return malformed("%v", err)
	}
	code, header, err := informationalFromHead(f.Informational)
	if err != nil {
		return err
	}
	o.Informational.WriteInformational(code, header)
	return nil
}
