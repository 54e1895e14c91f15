package tunnel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

func encode(t testing.TB, f *Frame) []byte {
	t.Helper()
	b, err := proto.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeFrame(t *testing.T) {
	want := &Frame{
		Request: &tunnelv1.RequestHead{Method: "GET", Scheme: "http", Authority: "b:80", Path: "/", Host: "b"},
		Data:    []byte("x"),
		End:     true,
	}
	got, err := DecodeFrame(encode(t, want))
	if err != nil || !proto.Equal(got, want) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	if f, err := DecodeFrame(nil); err != nil || f.Request != nil || f.End {
		t.Fatalf("empty input: %v, %v; want an empty frame", f, err)
	}

	// A frame of exactly MaxFrameSize bytes is accepted: tag (1 byte) and
	// length (3 bytes) of the data field, then the data.
	exact := encode(t, &Frame{Data: make([]byte, MaxFrameSize-4)})
	if len(exact) != MaxFrameSize {
		t.Fatalf("test frame is %d bytes, want %d", len(exact), MaxFrameSize)
	}
	if _, err := DecodeFrame(exact); err != nil {
		t.Fatalf("frame of MaxFrameSize bytes: %v", err)
	}

	for name, b := range map[string][]byte{
		"one byte over MaxFrameSize": encode(t, &Frame{Data: make([]byte, MaxFrameSize-3)}),
		"far over MaxFrameSize":      make([]byte, 4*MaxFrameSize),
		"truncated":                  exact[:100],
		"bad wire type":              {0x0f},
		"length past the end":        {0x1a, 0xff, 0xff, 0xff, 0x0f},
	} {
		t.Run(name, func(t *testing.T) {
			f, err := DecodeFrame(b)
			if !errors.Is(err, ErrMalformed) || f != nil {
				t.Fatalf("DecodeFrame: frame %v, error %v; want ErrMalformed", f != nil, err)
			}
		})
	}
}

// TestFrameBytesNotUTF8 checks that the strings of a head carry bytes that
// are not UTF-8, as HTTP allows in header values (obs-text): proto3 would
// refuse to encode them and to decode them, and every exchange with a
// Latin-1 header failed with 502.
func TestFrameBytesNotUTF8(t *testing.T) {
	latin1 := "Ren\xe9"
	want := &Frame{
		Request: &tunnelv1.RequestHead{
			Method: "GET", Scheme: "http", Authority: "b:80", Path: "/caf\xe9", Host: "b\xff",
			Headers:      []*tunnelv1.Header{{Name: "X-Name\x80", Values: []string{latin1, "\xff\xfe"}}},
			TrailerNames: []string{"X-\xe9"}, App: "\xc3", RequestId: "\xe9",
		},
		Response:      &tunnelv1.ResponseHead{Status: 200, Headers: []*tunnelv1.Header{{Name: "X-Back", Values: []string{latin1}}}, TrailerNames: []string{"\xe9"}},
		Informational: &tunnelv1.ResponseHead{Status: 103, Headers: []*tunnelv1.Header{{Name: "Link", Values: []string{latin1}}}},
		Trailers:      []*tunnelv1.Header{{Name: "X-Tr", Values: []string{latin1}}},
		Error:         &tunnelv1.Error{Code: "\xe9", Message: latin1},
	}
	b := encode(t, want) // proto.Marshal, as the QUIC and yamux transports encode
	got, err := DecodeFrame(b)
	if err != nil || !proto.Equal(got, want) {
		t.Fatalf("DecodeFrame: %v, %v; want %v", got, err, want)
	}
	var std Frame
	if err := proto.Unmarshal(b, &std); err != nil || !proto.Equal(&std, want) {
		t.Fatalf("proto.Unmarshal: %v, %v", &std, err)
	}
	if v := got.Request.Headers[0].Values[0]; v != latin1 {
		t.Fatalf("header value %q, want %q byte for byte", v, latin1)
	}
}

// validHead is a request head RequestFromHead accepts; tests edit copies.
func validHead() *tunnelv1.RequestHead {
	return &tunnelv1.RequestHead{
		Method:        "POST",
		Scheme:        "http",
		Authority:     "backend.internal:8080",
		Path:          "/a%2Fb/c?x=1&y=%20",
		Host:          "app.example.com",
		Headers:       []*tunnelv1.Header{{Name: "x-two", Values: []string{"1", "2"}}, {Name: "Accept", Values: []string{"*/*"}}},
		ContentLength: 5,
		TrailerNames:  []string{"x-checksum"},
	}
}

func TestRequestFromHead(t *testing.T) {
	req, err := RequestFromHead(context.Background(), validHead())
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case req.Method != "POST", req.URL.Scheme != "http", req.URL.Host != "backend.internal:8080",
		req.URL.RequestURI() != "/a%2Fb/c?x=1&y=%20", req.Host != "app.example.com", req.ContentLength != 5:
		t.Fatalf("request: %s %s host=%s cl=%d", req.Method, req.URL, req.Host, req.ContentLength)
	case len(req.Header["X-Two"]) != 2 || req.Header.Get("Accept") != "*/*":
		t.Fatalf("headers not canonicalised: %v", req.Header)
	}
	if _, ok := req.Trailer["X-Checksum"]; !ok || len(req.Trailer) != 1 {
		t.Fatalf("trailer: %v", req.Trailer)
	}

	okCases := map[string]func(h *tunnelv1.RequestHead){
		"https":               func(h *tunnelv1.RequestHead) { h.Scheme = "https" },
		"asterisk path":       func(h *tunnelv1.RequestHead) { h.Method, h.Path = "OPTIONS", "*" },
		"unknown length":      func(h *tunnelv1.RequestHead) { h.ContentLength = -1 },
		"extension method":    func(h *tunnelv1.RequestHead) { h.Method = "PROPFIND" },
		"ipv6 authority":      func(h *tunnelv1.RequestHead) { h.Authority = "[::1]:9000" },
		"tab in header value": func(h *tunnelv1.RequestHead) { h.Headers = []*tunnelv1.Header{{Name: "X", Values: []string{"a\tb"}}} },
		"Latin-1 header value": func(h *tunnelv1.RequestHead) {
			h.Headers = []*tunnelv1.Header{{Name: "X", Values: []string{"Ren\xe9"}}}
		},
		"no headers": func(h *tunnelv1.RequestHead) { h.Headers = nil },
	}
	for name, edit := range okCases {
		t.Run("ok/"+name, func(t *testing.T) {
			h := validHead()
			edit(h)
			if _, err := RequestFromHead(context.Background(), h); err != nil {
				t.Fatal(err)
			}
		})
	}

	for name, edit := range malformedHeads() {
		t.Run("malformed/"+name, func(t *testing.T) {
			h := validHead()
			edit(h)
			req, err := RequestFromHead(context.Background(), h)
			if !errors.Is(err, ErrMalformed) || req != nil {
				t.Fatalf("RequestFromHead = %v, %v; want ErrMalformed", req, err)
			}
		})
	}
}

// malformedHeads are edits that make validHead break the protocol; the
// agent must refuse each before anything reaches a backend.
func malformedHeads() map[string]func(h *tunnelv1.RequestHead) {
	manyHeaders := make([]*tunnelv1.Header, maxHeaderCount+1)
	for i := range manyHeaders {
		manyHeaders[i] = &tunnelv1.Header{Name: "X-H", Values: []string{"v"}}
	}
	manyTrailers := make([]string, maxHeaderCount+1)
	for i := range manyTrailers {
		manyTrailers[i] = "X-T"
	}
	hdr := func(name string, values ...string) func(h *tunnelv1.RequestHead) {
		return func(h *tunnelv1.RequestHead) { h.Headers = []*tunnelv1.Header{{Name: name, Values: values}} }
	}
	return map[string]func(h *tunnelv1.RequestHead){
		"empty method":             func(h *tunnelv1.RequestHead) { h.Method = "" },
		"method with space":        func(h *tunnelv1.RequestHead) { h.Method = "GET /evil HTTP/1.1\r\nX:" },
		"method with CRLF":         func(h *tunnelv1.RequestHead) { h.Method = "GET\r\n" },
		"method not ASCII":         func(h *tunnelv1.RequestHead) { h.Method = "G\xc9T" },
		"method too long":          func(h *tunnelv1.RequestHead) { h.Method = strings.Repeat("A", 65) },
		"empty scheme":             func(h *tunnelv1.RequestHead) { h.Scheme = "" },
		"scheme file":              func(h *tunnelv1.RequestHead) { h.Scheme = "file" },
		"scheme upper case":        func(h *tunnelv1.RequestHead) { h.Scheme = "HTTP" },
		"empty authority":          func(h *tunnelv1.RequestHead) { h.Authority = "" },
		"authority with @":         func(h *tunnelv1.RequestHead) { h.Authority = "user@backend:80" },
		"authority with /":         func(h *tunnelv1.RequestHead) { h.Authority = "backend:80/x" },
		"authority with ?":         func(h *tunnelv1.RequestHead) { h.Authority = "backend?:80" },
		"authority with #":         func(h *tunnelv1.RequestHead) { h.Authority = "backend#:80" },
		"authority with space":     func(h *tunnelv1.RequestHead) { h.Authority = "back end:80" },
		"authority with CRLF":      func(h *tunnelv1.RequestHead) { h.Authority = "backend\r\n:80" },
		"empty path":               func(h *tunnelv1.RequestHead) { h.Path = "" },
		"relative path":            func(h *tunnelv1.RequestHead) { h.Path = "a/b" },
		"absolute URL as path":     func(h *tunnelv1.RequestHead) { h.Path = "http://evil/" },
		"path with CRLF":           func(h *tunnelv1.RequestHead) { h.Path = "/a\r\nX-Injected: 1" },
		"path with space":          func(h *tunnelv1.RequestHead) { h.Path = "/a b" },
		"query with space":         func(h *tunnelv1.RequestHead) { h.Path = "/a?b HTTP/1.0" },
		"path with tab":            func(h *tunnelv1.RequestHead) { h.Path = "/a?b\tc" },
		"path with NUL":            func(h *tunnelv1.RequestHead) { h.Path = "/a\x00" },
		"Host with CRLF":           func(h *tunnelv1.RequestHead) { h.Host = "a\r\nX: y" },
		"Host with space":          func(h *tunnelv1.RequestHead) { h.Host = "a b" },
		"content length -2":        func(h *tunnelv1.RequestHead) { h.ContentLength = -2 },
		"content length min int64": func(h *tunnelv1.RequestHead) { h.ContentLength = -1 << 63 },
		"header name with CRLF":    hdr("X-A\r\nX-B", "v"),
		"header name with colon":   hdr("X-A:", "v"),
		"header name not ASCII":    hdr("X-\xe9", "v"),
		"header name with space":   hdr("X A", "v"),
		"empty header name":        hdr("", "v"),
		"header value with CRLF":   hdr("X-A", "ok", "v\r\nX-Injected: 1"),
		"header value with LF":     hdr("X-A", "v\nX-Injected: 1"),
		"header value with CR":     hdr("X-A", "v\r"),
		"header value with NUL":    hdr("X-A", "v\x00"),
		"headers over 64 KiB":      hdr("X-A", strings.Repeat("a", 40<<10), strings.Repeat("b", 30<<10)),
		"too many headers":         func(h *tunnelv1.RequestHead) { h.Headers = manyHeaders },
		"trailer name with CRLF":   func(h *tunnelv1.RequestHead) { h.TrailerNames = []string{"X\r\nY"} },
		"too many trailer names":   func(h *tunnelv1.RequestHead) { h.TrailerNames = manyTrailers },
	}
}

func TestResponseFromHead(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://backend/", nil)
	valid := func() *tunnelv1.ResponseHead {
		return &tunnelv1.ResponseHead{
			Status:        203,
			Headers:       []*tunnelv1.Header{{Name: "content-length", Values: []string{"3"}}, {Name: "x-a", Values: []string{"1"}}},
			ContentLength: 3,
			TrailerNames:  []string{"grpc-status"},
		}
	}
	res, err := responseFromHead(valid(), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 203 || res.Status != "203 Non-Authoritative Information" || res.ContentLength != 3 ||
		res.Header.Get("Content-Length") != "3" || res.Header.Get("X-A") != "1" || res.Request != req {
		t.Fatalf("response: %+v", res)
	}
	if _, ok := res.Trailer["Grpc-Status"]; !ok {
		t.Fatalf("trailer: %v", res.Trailer)
	}
	for _, status := range []int32{101, 200, 599, 999} {
		h := valid()
		h.Status = status
		if _, err := responseFromHead(h, req); err != nil {
			t.Errorf("status %d: %v", status, err)
		}
	}

	bad := map[string]func(h *tunnelv1.ResponseHead){
		"status 0":          func(h *tunnelv1.ResponseHead) { h.Status = 0 },
		"status 99":         func(h *tunnelv1.ResponseHead) { h.Status = 99 },
		"status 1000":       func(h *tunnelv1.ResponseHead) { h.Status = 1000 },
		"status 100":        func(h *tunnelv1.ResponseHead) { h.Status = 100 },
		"status 199":        func(h *tunnelv1.ResponseHead) { h.Status = 199 },
		"status negative":   func(h *tunnelv1.ResponseHead) { h.Status = -200 },
		"content length -2": func(h *tunnelv1.ResponseHead) { h.ContentLength = -2 },
		"header name with CRLF": func(h *tunnelv1.ResponseHead) {
			h.Headers = []*tunnelv1.Header{{Name: "A\r\nB", Values: []string{"1"}}}
		},
		"header value with CRLF": func(h *tunnelv1.ResponseHead) {
			h.Headers = []*tunnelv1.Header{{Name: "Set-Cookie", Values: []string{"a\r\n\r\n<html>"}}}
		},
		"header value with NUL": func(h *tunnelv1.ResponseHead) { h.Headers = []*tunnelv1.Header{{Name: "X", Values: []string{"\x00"}}} },
		"trailer name invalid":  func(h *tunnelv1.ResponseHead) { h.TrailerNames = []string{"a b"} },
	}
	for name, edit := range bad {
		t.Run(name, func(t *testing.T) {
			h := valid()
			edit(h)
			res, err := responseFromHead(h, req)
			if !errors.Is(err, ErrMalformed) || res != nil {
				t.Fatalf("responseFromHead = %v, %v; want ErrMalformed", res, err)
			}
		})
	}
}

func TestMergeTrailers(t *testing.T) {
	var dst http.Header
	if err := mergeTrailers(&dst, nil); err != nil || dst != nil {
		t.Fatalf("no trailers: %v %v", dst, err)
	}
	if err := mergeTrailers(&dst, []*tunnelv1.Header{{Name: "grpc-status", Values: []string{"0"}}}); err != nil {
		t.Fatal(err)
	}
	if dst.Get("Grpc-Status") != "0" {
		t.Fatalf("trailers: %v", dst)
	}
	err := mergeTrailers(&dst, []*tunnelv1.Header{{Name: "X", Values: []string{"a\r\nb"}}})
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad trailer value: %v", err)
	}
}

func TestHeadsCarryNoFramingHeaders(t *testing.T) {
	req, _ := http.NewRequest("POST", "http://backend:80/p?q=1", strings.NewReader("body"))
	req.Host = "public.example"
	req.Header.Set("Content-Length", "999")
	req.Header.Set("Trailer", "X-Sum")
	req.Header.Set("X-Keep", "1")
	req.Trailer = http.Header{"X-Sum": nil}
	h := requestHead(req, &Options{App: "app", RequestID: "rid", BackendHTTP2: true})
	for _, f := range h.GetHeaders() {
		if f.GetName() == "Content-Length" || f.GetName() == "Trailer" {
			t.Errorf("request head carries %s", f.GetName())
		}
	}
	if len(h.GetHeaders()) != 1 || h.GetContentLength() != 4 || h.GetHost() != "public.example" ||
		h.GetAuthority() != "backend:80" || h.GetPath() != "/p?q=1" || h.GetApp() != "app" ||
		h.GetRequestId() != "rid" || !h.GetBackendHttp2() || len(h.GetTrailerNames()) != 1 {
		t.Fatalf("head: %v", h)
	}

	res := &http.Response{StatusCode: 200, ContentLength: 10, Header: http.Header{
		"Content-Length": {"10"}, "Trailer": {"X-Sum"},
	}}
	rh := responseHead(res)
	if len(rh.GetHeaders()) != 1 || rh.GetHeaders()[0].GetName() != "Content-Length" {
		t.Fatalf("response head headers: %v (want Content-Length only)", rh.GetHeaders())
	}
}

// TestCheckRequestHead: what the gateway lets through, the agent accepts,
// and the gateway refuses what the agent would refuse.
func TestCheckRequestHead(t *testing.T) {
	newReq := func(h http.Header, trailer http.Header) *http.Request {
		req, _ := http.NewRequest("GET", "http://backend:80/", nil)
		req.Header, req.Trailer = h, trailer
		return req
	}
	fields := func(n, valueLen int) http.Header {
		h := make(http.Header, n)
		for i := range n {
			h[fmt.Sprintf("X-%04d", i)] = []string{strings.Repeat("v", valueLen)}
		}
		return h
	}
	names := func(n int) http.Header {
		h := make(http.Header, n)
		for i := range n {
			h[fmt.Sprintf("X-T%d", i)] = nil
		}
		return h
	}
	// X-0000 … has 6-byte names: 64 fields of 1018-byte values fill 64 KiB.
	for name, tc := range map[string]struct {
		req  *http.Request
		fits bool
	}{
		"empty":                    {newReq(http.Header{}, nil), true},
		"1000 fields":              {newReq(fields(maxHeaderCount, 1), nil), true},
		"1001 fields":              {newReq(fields(maxHeaderCount+1, 1), nil), false},
		"64 KiB":                   {newReq(fields(64, 1018), nil), true},
		"64 KiB and a byte":        {newReq(fields(64, 1019), nil), false},
		"1000 declared trailers":   {newReq(http.Header{}, names(maxHeaderCount)), true},
		"1001 declared trailers":   {newReq(http.Header{}, names(maxHeaderCount+1)), false},
		"many values of one field": {newReq(http.Header{"X": make([]string, 70<<10)}, nil), true},
		"long values of one field": {newReq(http.Header{"X": {strings.Repeat("v", 40<<10), strings.Repeat("v", 30<<10)}}, nil), false},
	} {
		t.Run(name, func(t *testing.T) {
			err := CheckRequestHead(tc.req)
			if (err == nil) != tc.fits || (err != nil && !errors.Is(err, ErrHeadTooLarge)) {
				t.Fatalf("CheckRequestHead = %v, want fits=%v", err, tc.fits)
			}
			_, err = RequestFromHead(context.Background(), requestHead(tc.req, nil))
			if (err == nil) != tc.fits {
				t.Fatalf("the agent's RequestFromHead = %v, want accepted=%v", err, tc.fits)
			}
		})
	}
}

// TestPooledRequestFrame: a request frame's reused header messages carry
// what headersToWire gives, and a released frame keeps nothing of its
// previous request.
func TestPooledRequestFrame(t *testing.T) {
	big := http.Header{"A": {"1"}, "B": {"2", "3"}, "Content-Length": {"5"}, "Trailer": {"X"}, "C": {"4"}}
	small := http.Header{"D": {"5"}}
	w := new(requestFrame)
	for _, h := range []http.Header{big, small, big} {
		req := httptest.NewRequest("GET", "http://backend:80/x", nil)
		req.Header = h
		fillRequestHead(&w.head, req, &Options{App: "app", RequestID: "rid"}, w.fill(h, false))
		w.frame.Request, w.frame.End = &w.head, true
		got := make(http.Header)
		for _, f := range w.head.Headers {
			got[f.GetName()] = append(got[f.GetName()], f.GetValues()...)
		}
		want := make(http.Header)
		for _, f := range headersToWire(h, false) {
			want[f.GetName()] = f.GetValues()
		}
		if !maps.EqualFunc(got, want, slices.Equal) {
			t.Errorf("pooled %v, want %v", got, want)
		}
		w.release(&requestFrames)
		for i := range w.block {
			if m := &w.block[i]; len(w.ptrs) != 0 || m.GetName() != "" || m.GetValues() != nil {
				t.Errorf("released, %d pointers left, message %d still holds %q %q", len(w.ptrs), i, m.GetName(), m.GetValues())
			}
		}
		if w.frame.Request != nil || w.frame.End || w.head.App != "" || w.head.Path != "" || w.head.Headers != nil {
			t.Errorf("released, the frame still holds %v", &w.frame)
		}
	}
}

// TestPooledResponseFrame: a released response frame keeps nothing of the
// response it carried.
func TestPooledResponseFrame(t *testing.T) {
	rf := new(responseFrame)
	res := &http.Response{StatusCode: 200, Header: http.Header{"X-A": {"1"}, "Content-Length": {"2"}}, ContentLength: 2}
	fillResponseHead(&rf.head, res, rf.fill(res.Header, true))
	rf.frame.Response, rf.frame.Data, rf.frame.End = &rf.head, []byte("ok"), true
	if got := len(rf.head.Headers); got != 2 {
		t.Fatalf("%d headers, want 2 (a response keeps Content-Length)", got)
	}
	rf.release(&responseFrames)
	if rf.frame.Response != nil || rf.frame.Data != nil || rf.head.Status != 0 || rf.head.Headers != nil || rf.block[0].Name != "" {
		t.Errorf("released, the frame still holds %v, %v", &rf.frame, &rf.head)
	}
}
