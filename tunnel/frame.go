package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// ErrMalformed is wrapped by every error about a Frame that breaks the
// protocol. The stream that carried it is reset.
var ErrMalformed = errors.New("malformed tunnel frame")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Limits on what a peer may put in a head.
const (
	maxHeaderBytes = 64 << 10 // sum of names and values of one head
	maxHeaderCount = 1000
)

// DecodeFrame parses one encoded Frame, as byte-stream transports read it.
// The frame does not keep b: the caller may reuse it (see
// UnmarshalFrameAliasing for a caller that hands b over).
func DecodeFrame(b []byte) (*Frame, error) {
	if len(b) > MaxFrameSize {
		return nil, malformed("frame of %d bytes exceeds %d", len(b), MaxFrameSize)
	}
	return decodeFrame(b, false)
}

// headersToWire converts h for a head, dropping the headers that the
// framing itself carries (Trailer; and Content-Length of requests, which the
// backend client recomputes; a response keeps it so that a HEAD answer
// shows the length).
//
// The Header messages come from one block (two allocations per head rather
// than one per header); the values alias h's slices, which is safe because
// the head is only encoded, never modified.
func headersToWire(h http.Header, keepLength bool) []*tunnelv1.Header {
	return appendWire(make([]*tunnelv1.Header, 0, len(h)), make([]tunnelv1.Header, len(h)), h, keepLength)
}

// appendWire is headersToWire into out (empty) and block (at least len(h)
// messages).
func appendWire(out []*tunnelv1.Header, block []tunnelv1.Header, h http.Header, keepLength bool) []*tunnelv1.Header {
	for k, vv := range h {
		if k == "Trailer" || (k == "Content-Length" && !keepLength) {
			continue
		}
		hdr := &block[len(out)]
		hdr.Name, hdr.Values = k, vv
		out = append(out, hdr)
	}
	return out
}

// headFrame is pooled memory for the first frame of a request (the
// gateway's RoundTrip) or of a response (the agent's ServeStream): the
// frame, its head and the header messages. A head is only encoded, and a
// stream keeps nothing of a frame once Send returned, so it goes back to
// its pool right after sending: a small exchange makes no garbage of it (two
// allocations fewer per head than when the headers were allocated for it),
// and an exchange waiting long for its response (a long poll) holds none of
// it (the gateway's clientExchange is 352 bytes smaller than when it held
// the frame).
type headFrame[H any] struct {
	frame Frame
	head  H
	wireHeaders
}

type (
	requestFrame  = headFrame[tunnelv1.RequestHead]
	responseFrame = headFrame[tunnelv1.ResponseHead]
)

var (
	requestFrames  = sync.Pool{New: func() any { return new(requestFrame) }}
	responseFrames = sync.Pool{New: func() any { return new(responseFrame) }}
)

// release clears f and puts it back into pool (its type's).
func (f *headFrame[H]) release(pool *sync.Pool) {
	var zero H
	f.frame = Frame{}
	f.head = zero
	if f.wireHeaders.release() {
		pool.Put(f)
	}
}

// wireHeaders is reusable memory for the header messages of a head.
type wireHeaders struct {
	ptrs  []*tunnelv1.Header
	block []tunnelv1.Header
}

// maxPooledHeaders bounds the header messages a pooled wireHeaders keeps: a
// rare head with more is left to the collector.
const maxPooledHeaders = 64

// fill is headersToWire into w's memory, grown when it is too small.
func (w *wireHeaders) fill(h http.Header, keepLength bool) []*tunnelv1.Header {
	if cap(w.block) < len(h) {
		w.ptrs = make([]*tunnelv1.Header, 0, len(h))
		w.block = make([]tunnelv1.Header, len(h))
	}
	w.ptrs = appendWire(w.ptrs[:0], w.block[:len(h)], h, keepLength)
	return w.ptrs
}

// release forgets the header names and values (the request's) and reports
// whether the memory is worth keeping.
func (w *wireHeaders) release() bool {
	for i, hdr := range w.ptrs {
		hdr.Name, hdr.Values = "", nil
		w.ptrs[i] = nil
	}
	w.ptrs = w.ptrs[:0]
	return cap(w.block) <= maxPooledHeaders
}

// headersFromWire validates and converts headers received from the peer.
// Names are canonicalised; invalid names or values are errors.
func headersFromWire(hs []*tunnelv1.Header, what string) (http.Header, error) {
	if len(hs) > maxHeaderCount {
		return nil, malformed("%s: %d header fields exceed %d", what, len(hs), maxHeaderCount)
	}
	h := make(http.Header, len(hs))
	size := 0
	for _, f := range hs {
		if !httpguts.ValidHeaderFieldName(f.GetName()) {
			return nil, malformed("%s: invalid header name %q", what, f.GetName())
		}
		size += len(f.GetName())
		for _, v := range f.GetValues() {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, malformed("%s: invalid value for header %q", what, f.GetName())
			}
			size += len(v)
		}
		if size > maxHeaderBytes {
			return nil, malformed("%s: headers exceed %d bytes", what, maxHeaderBytes)
		}
		k := http.CanonicalHeaderKey(f.GetName())
		if prev, ok := h[k]; ok {
			// Slow path: the name came twice (or in two spellings).
			h[k] = append(prev, f.GetValues()...)
			continue
		}
		// Fast path: share the decoded values instead of copying them. The
		// slice is capped, so that an append by whoever uses h copies it
		// rather than writing into the frame's memory.
		vv := f.GetValues()
		h[k] = vv[:len(vv):len(vv)]
	}
	return h, nil
}

// ErrHeadTooLarge is wrapped by CheckRequestHead errors.
var ErrHeadTooLarge = errors.New("request head too large for the tunnel")

// CheckRequestHead reports whether the headers and declared trailers of req
// fit the limits that the agent enforces on a request head (see
// headersFromWire), so that the gateway refuses an oversized request itself
// instead of relaying a head that the agent refuses.
func CheckRequestHead(req *http.Request) error {
	if err := checkHeadLimits(req.Header, req.Trailer); err != nil {
		return fmt.Errorf("%w: %v", ErrHeadTooLarge, err)
	}
	return nil
}

// checkHeadLimits reports whether a head with header h and declared
// trailers trailer fits the limits that the receiving side enforces
// (headersFromWire): the agent on a request head, the gateway on a
// response head.
func checkHeadLimits(h, trailer http.Header) error {
	if n := max(len(h), len(trailer)); n > maxHeaderCount {
		return fmt.Errorf("%d header fields exceed %d", n, maxHeaderCount)
	}
	size := 0
	for k, vv := range h {
		size += len(k)
		for _, v := range vv {
			size += len(v)
		}
	}
	if size > maxHeaderBytes {
		return fmt.Errorf("headers of %d bytes exceed %d", size, maxHeaderBytes)
	}
	return nil
}

// trailerNames returns the names declared in a trailer map.
func trailerNames(t http.Header) []string {
	if len(t) == 0 {
		return nil
	}
	names := make([]string, 0, len(t))
	for k := range t {
		names = append(names, k)
	}
	return names
}

// declaredTrailers builds the Trailer map announced in a head.
func declaredTrailers(names []string, what string) (http.Header, error) {
	if len(names) == 0 {
		return nil, nil
	}
	if len(names) > maxHeaderCount {
		return nil, malformed("%s: too many trailer names", what)
	}
	t := make(http.Header, len(names))
	for _, n := range names {
		if !httpguts.ValidHeaderFieldName(n) {
			return nil, malformed("%s: invalid trailer name %q", what, n)
		}
		t[http.CanonicalHeaderKey(n)] = nil
	}
	return t, nil
}

// mergeTrailers copies received trailers into *dst, creating it if needed.
func mergeTrailers(dst *http.Header, hs []*tunnelv1.Header) error {
	if len(hs) == 0 {
		return nil
	}
	t, err := headersFromWire(hs, "trailers")
	if err != nil {
		return err
	}
	if *dst == nil {
		*dst = make(http.Header, len(t))
	}
	for k, vv := range t {
		(*dst)[k] = vv
	}
	return nil
}

// requestHead builds the wire head for an outgoing request whose URL already
// points at the backend.
func requestHead(req *http.Request, o *Options) *tunnelv1.RequestHead {
	h := new(tunnelv1.RequestHead)
	fillRequestHead(h, req, o, headersToWire(req.Header, false))
	return h
}

// fillRequestHead is requestHead into a zero head that the caller owns,
// with the headers converted by the caller.
func fillRequestHead(h *tunnelv1.RequestHead, req *http.Request, o *Options, headers []*tunnelv1.Header) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	path := req.URL.RequestURI()
	if req.URL.Opaque != "" && strings.HasPrefix(req.URL.Opaque, "//") {
		path = req.URL.Opaque
	}
	cl := req.ContentLength
	if req.Body == nil || req.Body == http.NoBody {
		cl = 0
	}
	h.Method = req.Method
	h.Scheme = req.URL.Scheme
	h.Authority = req.URL.Host
	h.Path = path
	h.Host = host
	h.Headers = headers
	h.ContentLength = cl
	h.TrailerNames = trailerNames(req.Trailer)
	if o != nil {
		h.BackendHttp2 = o.BackendHTTP2
		h.App = o.App
		h.RequestId = o.RequestID
		h.Informational = o.Informational != nil
	}
}

// RequestFromHead validates a received head and builds the request the agent
// sends to the backend. The body is attached by the caller. The request's
// Header is the one the head was decoded into, when UnmarshalFrameAliasing
// decoded it (see recvhead.go).
func RequestFromHead(ctx context.Context, h *tunnelv1.RequestHead) (*http.Request, error) {
	if !validMethod(h.GetMethod()) {
		return nil, malformed("request: invalid method %q", h.GetMethod())
	}
	switch h.GetScheme() {
	case "http", "https":
	default:
		return nil, malformed("request: scheme %q is not http or https", h.GetScheme())
	}
	if h.GetAuthority() == "" || strings.ContainsAny(h.GetAuthority(), "/?#@ \t\r\n") {
		return nil, malformed("request: invalid backend authority %q", h.GetAuthority())
	}
	if !strings.HasPrefix(h.GetPath(), "/") && h.GetPath() != "*" {
		return nil, malformed("request: path %q does not start with /", h.GetPath())
	}
	// The path goes into the backend's request line as it is: a space
	// (which url.ParseRequestURI leaves in a query) would split that line.
	if strings.Contains(h.GetPath(), " ") {
		return nil, malformed("request: path %q contains a space", h.GetPath())
	}
	if !httpguts.ValidHostHeader(h.GetHost()) {
		return nil, malformed("request: invalid Host %q", h.GetHost())
	}
	if h.GetContentLength() < -1 {
		return nil, malformed("request: invalid content length %d", h.GetContentLength())
	}
	u, err := url.ParseRequestURI(h.GetPath())
	if err != nil {
		return nil, malformed("request: path: %v", err)
	}
	u.Scheme = h.GetScheme()
	u.Host = h.GetAuthority()
	header, err := requestHeader(h)
	if err != nil {
		return nil, err
	}
	trailer, err := declaredTrailers(h.GetTrailerNames(), "request")
	if err != nil {
		return nil, err
	}
	req := (&http.Request{
		Method:        h.GetMethod(),
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Host:          h.GetHost(),
		ContentLength: h.GetContentLength(),
		Trailer:       trailer,
	}).WithContext(ctx)
	return req, nil
}

func validMethod(m string) bool {
	if m == "" || len(m) > 64 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// responseHead builds the wire head for a backend response.
func responseHead(res *http.Response) *tunnelv1.ResponseHead {
	h := new(tunnelv1.ResponseHead)
	fillResponseHead(h, res, headersToWire(res.Header, true))
	return h
}

// fillResponseHead is responseHead into a zero head that the caller owns,
// with the headers converted by the caller.
func fillResponseHead(h *tunnelv1.ResponseHead, res *http.Response, headers []*tunnelv1.Header) {
	h.Status = int32(res.StatusCode)
	h.Headers = headers
	h.ContentLength = res.ContentLength
	h.TrailerNames = trailerNames(res.Trailer)
}

// responseFromHead validates a received response head.
func responseFromHead(h *tunnelv1.ResponseHead, req *http.Request) (*http.Response, error) {
	res := new(http.Response)
	if err := fillResponse(res, h, req); err != nil {
		return nil, err
	}
	return res, nil
}

// fillResponse is responseFromHead into a response that the caller owns.
func fillResponse(res *http.Response, h *tunnelv1.ResponseHead, req *http.Request) error {
	if h.GetStatus() < 100 || h.GetStatus() > 999 {
		return malformed("response: invalid status %d", h.GetStatus())
	}
	if h.GetStatus() < 200 && h.GetStatus() != http.StatusSwitchingProtocols {
		// Informational heads travel as Frame.informational; as a final
		// status, net/http would send it as one and a 200 of its own.
		return malformed("response: informational status %d as the final response", h.GetStatus())
	}
	if h.GetContentLength() < -1 {
		return malformed("response: invalid content length %d", h.GetContentLength())
	}
	header, err := responseHeader(h)
	if err != nil {
		return err
	}
	trailer, err := declaredTrailers(h.GetTrailerNames(), "response")
	if err != nil {
		return err
	}
	code := int(h.GetStatus())
	*res = http.Response{
		Status:        statusLine(code),
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		ContentLength: h.GetContentLength(),
		Trailer:       trailer,
		Request:       req,
	}
	return nil
}

// statusLines holds the Status strings of the codes net/http knows, so
// that a response does not format one; see statusLine.
var statusLines = func() (lines [600]string) {
	for code := range lines {
		if text := http.StatusText(code); text != "" {
			lines[code] = strconv.Itoa(code) + " " + text
		}
	}
	return lines
}()

// statusLine is the Status of an http.Response with code, as net/http's
// client sets it ("200 OK").
func statusLine(code int) string {
	if code >= 0 && code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	// Slow path: a code without a standard text.
	return fmt.Sprintf("%d %s", code, http.StatusText(code))
}
