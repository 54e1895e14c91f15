package tunnel

import (
	"net/http"
	"unsafe"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/encoding/protowire"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// This file decodes the headers of a received head straight into the
// http.Header that the request (agent) or response (gateway) gets, instead
// of into Header messages that RequestFromHead or RoundTrip then copy into
// one: the Header messages (80 bytes each, and a slice of pointers to
// them) were two allocations and a second pass over every header of every
// small exchange, on both sides.
//
// UnmarshalFrameAliasing, which every transport decodes with, does this
// for Frame.request and Frame.response. The head is then the first field
// of a receivedRequest or receivedResponse, which also holds the header
// map and the error that headersFromWire would report for those headers;
// its Headers field is empty and marks the head as such (see
// receivedRequestOf). What is accepted and refused does not change: the
// wire format exactly as before (a malformed Header message makes the
// frame malformed; unknown fields inside one are skipped, as
// headersFromWire ignored them), and header names, values, count and size
// are checked in the same order with the same errors, reported when the
// head is used (RequestFromHead, RoundTrip). FuzzDecodeFrame checks both
// against proto.Unmarshal and headersFromWire.
//
// DecodeFrame (tests, tools) still fills Headers, as do Frame.informational
// and trailers, which are rare. A received head is read, never re-encoded
// or edited: a head whose Headers were appended to is no longer marked, and
// the decoded headers are then lost.

// receivedRequest is a request head decoded by UnmarshalFrameAliasing.
type receivedRequest struct {
	head   tunnelv1.RequestHead // first: &head is the whole (see receivedRequestOf)
	header http.Header          // the head's headers; nil when err is set
	err    error                // the headers' error, as headersFromWire reports it
	raw    string               // the head's bytes, which its strings are cut from
	self   [1]*tunnelv1.Header  // head.Headers is self[:0:0], the mark (see isReceived)
}

// receivedResponse is receivedRequest for a response head.
type receivedResponse struct {
	head   tunnelv1.ResponseHead
	header http.Header
	err    error
	raw    string
	self   [1]*tunnelv1.Header
}

// The offsets of the marks from their heads.
var (
	requestMarkOff  = unsafe.Offsetof(receivedRequest{}.self)
	responseMarkOff = unsafe.Offsetof(receivedResponse{}.self)
)

// isReceived reports whether hs, the Headers of the head at h, is the mark
// of a head decoded into a wrapper whose mark lies off bytes after its
// head: an empty slice, with no room (an append moves it), over the
// wrapper's own self. A copy of the field into another head points into
// the first head's wrapper, not the other's, so it is not taken for one
// (an address compared as a number: h+off is outside a plain head's
// memory and is never dereferenced).
func isReceived(h unsafe.Pointer, hs []*tunnelv1.Header, off uintptr) bool {
	return hs != nil && cap(hs) == 0 && uintptr(unsafe.Pointer(unsafe.SliceData(hs))) == uintptr(h)+off
}

// receivedRequestOf returns the receivedRequest that h is the head of, or
// nil for a head that was not decoded into one.
func receivedRequestOf(h *tunnelv1.RequestHead) *receivedRequest {
	if h == nil || !isReceived(unsafe.Pointer(h), h.Headers, requestMarkOff) {
		return nil
	}
	// Only decodeRequest marks a head, and only the head of a
	// receivedRequest, which is its first field.
	return (*receivedRequest)(unsafe.Pointer(h))
}

func receivedResponseOf(h *tunnelv1.ResponseHead) *receivedResponse {
	if h == nil || !isReceived(unsafe.Pointer(h), h.Headers, responseMarkOff) {
		return nil
	}
	return (*receivedResponse)(unsafe.Pointer(h))
}

// requestHeader returns the validated headers of a received request head
// (headersFromWire's result).
func requestHeader(h *tunnelv1.RequestHead) (http.Header, error) {
	if r := receivedRequestOf(h); r != nil {
		return r.header, r.err
	}
	// Slow path: a head decoded by DecodeFrame or made in this process.
	return headersFromWire(h.GetHeaders(), "request")
}

// responseHeader is requestHeader for a response head.
func responseHeader(h *tunnelv1.ResponseHead) (http.Header, error) {
	if r := receivedResponseOf(h); r != nil {
		return r.header, r.err
	}
	return headersFromWire(h.GetHeaders(), "response")
}

// decodeRequest decodes the request head b into a new receivedRequest.
func decodeRequest(b []byte) (*tunnelv1.RequestHead, error) {
	r := new(receivedRequest)
	m := newHeaderMap(b, 6, "request")
	r.raw = m.s
	h := &r.head
	err := eachField(h, b, func(fl field) (bool, error) {
		if fl.typ == protowire.BytesType {
			switch fl.num {
			case 6:
				return true, m.add(fl.b)
			case 8:
				h.TrailerNames = append(h.TrailerNames, strField(m.s, b, fl.b))
				return true, nil
			}
		}
		return requestHeadField(h, m.s, b, fl), nil
	})
	h.Headers = r.self[:0:0]
	r.header, r.err = m.done()
	return h, err
}

// decodeResponse decodes the response head b into a new receivedResponse.
func decodeResponse(b []byte) (*tunnelv1.ResponseHead, error) {
	r := new(receivedResponse)
	m := newHeaderMap(b, 2, "response")
	r.raw = m.s
	h := &r.head
	err := eachField(h, b, func(fl field) (bool, error) {
		if fl.typ == protowire.BytesType {
			switch fl.num {
			case 2:
				return true, m.add(fl.b)
			case 4:
				h.TrailerNames = append(h.TrailerNames, strField(m.s, b, fl.b))
				return true, nil
			}
		}
		return responseHeadField(h, fl), nil
	})
	h.Headers = r.self[:0:0]
	r.header, r.err = m.done()
	return h, err
}

// unmarkRequest turns a received head back into a plain one, decoded
// again from its bytes, so that a second head in the same frame merges
// into it as proto.Unmarshal merges it. Rare: no peer sends two.
func unmarkRequest(h *tunnelv1.RequestHead) error {
	r := receivedRequestOf(h)
	if r == nil {
		return nil
	}
	b := []byte(r.raw)
	*r = receivedRequest{}
	return unmarshalRequestHead(&r.head, b)
}

func unmarkResponse(h *tunnelv1.ResponseHead) error {
	r := receivedResponseOf(h)
	if r == nil {
		return nil
	}
	b := []byte(r.raw)
	*r = receivedResponse{}
	return unmarshalResponseHead(&r.head, b)
}

// headerMap decodes the Header messages of one head into an http.Header,
// checking them as headersFromWire does. The strings are cut from s, the
// copy of the head's bytes; all values come from one block (one value per
// header, grown for the rest, as headsHeaders sizes its block).
type headerMap struct {
	s      string // copy of the head's bytes
	base   []byte // the head's bytes
	what   string // "request" or "response", for errors
	h      http.Header
	values []string
	size   int   // bytes of names and values so far
	err    error // the first error; later headers are only parsed
}

// newHeaderMap counts the headers (fields num) of the head b and makes room
// for them. Too many is an error at once, as in headersFromWire.
func newHeaderMap(b []byte, num protowire.Number, what string) headerMap {
	m := headerMap{s: string(b), base: b, what: what}
	n := 0
	for rest := b; len(rest) > 0; {
		fl, k, err := nextField(rest)
		if err != nil {
			break // eachField reports it
		}
		if fl.num == num && fl.typ == protowire.BytesType {
			n++
		}
		rest = rest[k:]
	}
	if n > maxHeaderCount {
		m.err = malformed("%s: %d header fields exceed %d", what, n, maxHeaderCount)
		return m
	}
	m.h = make(http.Header, n)
	if n > 0 {
		m.values = make([]string, 0, n)
	}
	return m
}

// add decodes the Header message b: its name (the last one, as
// proto.Unmarshal keeps it) and values; other fields are skipped.
func (m *headerMap) add(b []byte) error {
	keep := m.err == nil
	var name string
	first := len(m.values)
	for len(b) > 0 {
		fl, n, err := nextField(b)
		if err != nil {
			return err
		}
		if keep && fl.typ == protowire.BytesType {
			switch fl.num {
			case 1:
				name = strField(m.s, m.base, fl.b)
			case 2:
				m.values = append(m.values, strField(m.s, m.base, fl.b))
			}
		}
		b = b[n:]
	}
	if !keep {
		return nil
	}
	var vv []string
	if len(m.values) > first {
		// Capped, so that an append by whoever uses the header copies it
		// rather than overwriting the next header's values.
		vv = m.values[first:len(m.values):len(m.values)]
	}
	m.err = m.put(name, vv)
	return nil
}

// put checks one header as headersFromWire does and adds it.
func (m *headerMap) put(name string, vv []string) error {
	k, ok := canonicalName(name)
	if !ok {
		return malformed("%s: invalid header name %q", m.what, name)
	}
	m.size += len(name)
	for _, v := range vv {
		if !validFieldValue(v) {
			return malformed("%s: invalid value for header %q", m.what, name)
		}
		m.size += len(v)
	}
	if m.size > maxHeaderBytes {
		return malformed("%s: headers exceed %d bytes", m.what, maxHeaderBytes)
	}
	if prev, ok := m.h[k]; ok {
		// Slow path: the name came twice (or in two spellings).
		m.h[k] = append(prev, vv...)
		return nil
	}
	m.h[k] = vv
	return nil
}

// canonicalName is http.CanonicalHeaderKey(name) and whether
// httpguts.ValidHeaderFieldName accepts name, in one pass over a name that
// is already canonical, as the peer's names are (they come from net/http's
// header maps).
func canonicalName(name string) (string, bool) {
	if name == "" {
		return "", false
	}
	canonical := true
	upper := true // the next letter should be upper case
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !httpguts.IsTokenRune(rune(c)) {
			return "", false
		}
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			canonical = false
		}
		upper = c == '-'
	}
	if !canonical {
		// Slow path: a name in another spelling.
		return http.CanonicalHeaderKey(name), true
	}
	return name, true
}

// validFieldValue is httpguts.ValidHeaderFieldValue (no control byte but
// tab), eight bytes at a time: a value with no byte below 0x20 and no DEL,
// the usual one, takes a few operations per eight bytes instead of two
// comparisons per byte. Anything else goes to httpguts.
func validFieldValue(v string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(v); i += 8 {
		x := uint64(v[i]) | uint64(v[i+1])<<8 | uint64(v[i+2])<<16 | uint64(v[i+3])<<24 |
			uint64(v[i+4])<<32 | uint64(v[i+5])<<40 | uint64(v[i+6])<<48 | uint64(v[i+7])<<56
		del := x ^ 0x7f*ones
		// A high bit is set where a byte is below 0x20, or DEL (zero in
		// del); only where one of them is, though not always at that byte.
		if ((x-0x20*ones)&^x|(del-ones)&^del)&highs != 0 {
			// Slow path: a control byte, or a tab.
			return httpguts.ValidHeaderFieldValue(v)
		}
	}
	return httpguts.ValidHeaderFieldValue(v[i:])
}

// done returns the header map, or the error instead.
func (m *headerMap) done() (http.Header, error) {
	if m.err != nil {
		return nil, m.err
	}
	return m.h, nil
}
