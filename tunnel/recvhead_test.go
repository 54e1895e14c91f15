package tunnel

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"reflect"
	"testing"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/encoding/protowire"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// TestReceivedHeadsAsInMemory: a request or response head received from a
// peer (UnmarshalFrameAliasing, whose headers go straight into an
// http.Header) is accepted or refused exactly as the same head made in
// memory (its Header messages converted by headersFromWire), with the same
// error and the same header map.
func TestReceivedHeadsAsInMemory(t *testing.T) {
	reqCases := malformedHeads()
	for name, edit := range map[string]func(h *tunnelv1.RequestHead){
		"valid":      func(*tunnelv1.RequestHead) {},
		"no headers": func(h *tunnelv1.RequestHead) { h.Headers = nil },
		"two spellings of a name": func(h *tunnelv1.RequestHead) {
			h.Headers = append(h.Headers, &tunnelv1.Header{Name: "X-TWO", Values: []string{"3"}})
		},
		"header without values": func(h *tunnelv1.RequestHead) {
			h.Headers = append(h.Headers, &tunnelv1.Header{Name: "X-Empty"})
		},
		"invalid name after an invalid value": func(h *tunnelv1.RequestHead) {
			h.Headers = []*tunnelv1.Header{{Name: "X-A", Values: []string{"\r"}}, {Name: "a b"}}
		},
	} {
		reqCases["more/"+name] = edit
	}
	for name, edit := range reqCases {
		t.Run("request/"+name, func(t *testing.T) {
			h := validHead()
			edit(h)
			want, werr := RequestFromHead(context.Background(), h)
			got := receiveFrame(t, &Frame{Request: h}).GetRequest()
			if receivedRequestOf(got) == nil {
				t.Fatal("the head was not decoded into an http.Header")
			}
			req, err := RequestFromHead(context.Background(), got)
			sameResult(t, req, err, want, werr)
		})
	}

	respCases := map[string]func(h *tunnelv1.ResponseHead){
		"valid":      func(*tunnelv1.ResponseHead) {},
		"no headers": func(h *tunnelv1.ResponseHead) { h.Headers = nil },
		"header name with CRLF": func(h *tunnelv1.ResponseHead) {
			h.Headers = append(h.Headers, &tunnelv1.Header{Name: "A\r\nB", Values: []string{"1"}})
		},
		"header value with NUL": func(h *tunnelv1.ResponseHead) {
			h.Headers = append(h.Headers, &tunnelv1.Header{Name: "X", Values: []string{"\x00"}})
		},
		"repeated Set-Cookie": func(h *tunnelv1.ResponseHead) {
			h.Headers = append(h.Headers, &tunnelv1.Header{Name: "set-cookie", Values: []string{"a=1"}},
				&tunnelv1.Header{Name: "Set-Cookie", Values: []string{"b=2", "c=3"}})
		},
		"too many headers": func(h *tunnelv1.ResponseHead) {
			for range maxHeaderCount {
				h.Headers = append(h.Headers, &tunnelv1.Header{Name: "X", Values: []string{"1"}})
			}
		},
	}
	req, _ := http.NewRequest("GET", "http://backend/", nil)
	for name, edit := range respCases {
		t.Run("response/"+name, func(t *testing.T) {
			h := &tunnelv1.ResponseHead{
				Status:  200,
				Headers: []*tunnelv1.Header{{Name: "content-type", Values: []string{"text/plain"}}, {Name: "Date", Values: []string{"x"}}},
			}
			edit(h)
			want, werr := responseFromHead(h, req)
			got := receiveFrame(t, &Frame{Response: h}).GetResponse()
			if receivedResponseOf(got) == nil {
				t.Fatal("the head was not decoded into an http.Header")
			}
			res, err := responseFromHead(got, req)
			sameResult(t, res, err, want, werr)
		})
	}
}

func receiveFrame(t *testing.T, f *Frame) *Frame {
	t.Helper()
	got := new(Frame)
	if err := UnmarshalFrameAliasing(AppendFrame(nil, f), got); err != nil {
		t.Fatal(err)
	}
	return got
}

// sameResult compares the headers of two requests or responses, or their
// errors.
func sameResult[M *http.Request | *http.Response](t *testing.T, got M, err error, want M, werr error) {
	t.Helper()
	if fmt.Sprint(err) != fmt.Sprint(werr) || (got == nil) != (want == nil) {
		t.Fatalf("received: %v; in memory: %v", err, werr)
	}
	if got == nil {
		return
	}
	var gh, wh http.Header
	switch g := any(got).(type) {
	case *http.Request:
		gh, wh = g.Header, any(want).(*http.Request).Header
	case *http.Response:
		gh, wh = g.Header, any(want).(*http.Response).Header
	}
	if !reflect.DeepEqual(gh, wh) {
		t.Fatalf("received header %q; in memory %q", gh, wh)
	}
}

// TestReceivedHeadFieldsSkipped: fields of a Header message that this
// version does not know are skipped, and one that repeats the name
// replaces it, as proto.Unmarshal decodes them.
func TestReceivedHeadFieldsSkipped(t *testing.T) {
	var hdr []byte
	hdr = protowire.AppendTag(hdr, 1, protowire.BytesType)
	hdr = protowire.AppendString(hdr, "x-old")
	hdr = protowire.AppendTag(hdr, 3, protowire.VarintType) // unknown
	hdr = protowire.AppendVarint(hdr, 7)
	hdr = protowire.AppendTag(hdr, 2, protowire.BytesType)
	hdr = protowire.AppendString(hdr, "v1")
	hdr = protowire.AppendTag(hdr, 1, protowire.BytesType)
	hdr = protowire.AppendString(hdr, "x-new")
	hdr = protowire.AppendTag(hdr, 2, protowire.VarintType) // values, another wire type
	hdr = protowire.AppendVarint(hdr, 1)
	hdr = protowire.AppendTag(hdr, 2, protowire.BytesType)
	hdr = protowire.AppendString(hdr, "v2")
	var head []byte
	head = protowire.AppendTag(head, 1, protowire.VarintType)
	head = protowire.AppendVarint(head, 204)
	head = protowire.AppendTag(head, 2, protowire.BytesType)
	head = protowire.AppendBytes(head, hdr)
	frame := protowire.AppendTag(nil, 2, protowire.BytesType)
	frame = protowire.AppendBytes(frame, head)

	std, err := DecodeFrame(frame)
	if err != nil {
		t.Fatal(err)
	}
	want, err := headersFromWire(std.GetResponse().GetHeaders(), "response")
	if err != nil {
		t.Fatal(err)
	}
	got := new(Frame)
	if err := UnmarshalFrameAliasing(frame, got); err != nil {
		t.Fatal(err)
	}
	h, err := responseHeader(got.GetResponse())
	if err != nil || !reflect.DeepEqual(h, want) || h.Get("X-New") != "v1" || len(h["X-New"]) != 2 {
		t.Fatalf("decoded %q, %v; want %q", h, err, want)
	}
	// A Header message whose name runs past its end makes the frame
	// malformed, as before.
	bad := protowire.AppendTag(nil, 2, protowire.BytesType)
	bad = protowire.AppendBytes(bad, []byte{0x0a, 0x05, 'a'})
	bad = protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), bad) // a response head
	if _, err := DecodeFrame(bad); err == nil {
		t.Fatal("DecodeFrame accepted a broken Header message")
	}
	if err := UnmarshalFrameAliasing(bad, new(Frame)); err == nil {
		t.Fatal("UnmarshalFrameAliasing accepted a broken Header message")
	}
}

// TestFieldChecksAsHttpguts: canonicalName and validFieldValue accept
// exactly what httpguts accepts, and canonicalName gives
// http.CanonicalHeaderKey's spelling.
func TestFieldChecksAsHttpguts(t *testing.T) {
	for _, fill := range []byte{'a', 'A', '-', ' ', 0x80, 0xff, '\t'} {
		for n := range 18 {
			for pos := range n {
				for c := range 256 {
					b := bytes.Repeat([]byte{fill}, n)
					b[pos] = byte(c)
					s := string(b)
					if got, want := validFieldValue(s), httpguts.ValidHeaderFieldValue(s); got != want {
						t.Fatalf("validFieldValue(%q) = %v, httpguts says %v", s, got, want)
					}
					k, ok := canonicalName(s)
					if want := httpguts.ValidHeaderFieldName(s); ok != want || ok && k != http.CanonicalHeaderKey(s) {
						t.Fatalf("canonicalName(%q) = %q, %v; want %q, %v", s, k, ok, http.CanonicalHeaderKey(s), want)
					}
				}
			}
		}
	}
	for _, s := range []string{"", "content-type", "Content-Type", "CONTENT-TYPE", "X-Forwarded-For", "x--y", "-a", "a-", "ETag", "WWW-Authenticate"} {
		k, ok := canonicalName(s)
		if want := httpguts.ValidHeaderFieldName(s); ok != want || ok && k != http.CanonicalHeaderKey(s) {
			t.Errorf("canonicalName(%q) = %q, %v; want %q, %v", s, k, ok, http.CanonicalHeaderKey(s), want)
		}
	}
}

// TestReceivedMarkNotCopied: a head whose Headers field was copied from a
// received head (the usual way to build one from another's fields) is a
// plain head, not taken for the wrapper a received head lives in: the mark
// used to be one array of the package, so such a copy carried it, and
// RequestFromHead read past the plain head's memory as a header map, an
// error and a string (checkptr: "converted pointer straddles multiple
// allocations"; a reviewer's note on 941ea27).
func TestReceivedMarkNotCopied(t *testing.T) {
	in := receiveFrame(t, &Frame{Request: &tunnelv1.RequestHead{Method: "GET", Scheme: "https", Authority: "a.test",
		Path: "/", Headers: []*tunnelv1.Header{{Name: "X-A", Values: []string{"1"}}}}}).Request
	if receivedRequestOf(in) == nil {
		t.Fatal("a received request head is not recognised as received")
	}
	for i := range 100 {
		cp := &tunnelv1.RequestHead{Method: in.GetMethod(), Scheme: in.GetScheme(), Authority: in.GetAuthority(),
			Path: "/copy", Headers: in.GetHeaders()}
		if receivedRequestOf(cp) != nil {
			t.Fatalf("copy %d: a plain head with a received head's Headers is taken for a received one", i)
		}
		req, err := RequestFromHead(context.Background(), cp)
		if err != nil || len(req.Header) != 0 {
			t.Fatalf("copy %d: RequestFromHead: %v, headers %v; want none", i, err, req.Header)
		}
	}
	res := receiveFrame(t, &Frame{Response: &tunnelv1.ResponseHead{Status: 200,
		Headers: []*tunnelv1.Header{{Name: "X-B", Values: []string{"2"}}}}}).Response
	if receivedResponseOf(res) == nil {
		t.Fatal("a received response head is not recognised as received")
	}
	if cp := (&tunnelv1.ResponseHead{Status: 204, Headers: res.GetHeaders()}); receivedResponseOf(cp) != nil {
		t.Fatal("a plain response head with a received head's Headers is taken for a received one")
	}
}
