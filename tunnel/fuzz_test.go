package tunnel

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

var updateSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzDecodeFrame/seed-*")

// fuzzSeeds are the named seed inputs of FuzzDecodeFrame: one of each kind
// of frame, plus garbage. They are committed under testdata/fuzz so that a
// plain `go test` runs them.
func fuzzSeeds() map[string][]byte {
	must := func(f *Frame) []byte {
		b, err := proto.Marshal(f)
		if err != nil {
			panic(err)
		}
		return b
	}
	return map[string][]byte{
		"request": must(&Frame{Request: &tunnelv1.RequestHead{
			Method: "POST", Scheme: "http", Authority: "127.0.0.1:9000", Path: "/a%2Fb?x=1", Host: "app.example.com",
			Headers:       []*tunnelv1.Header{{Name: "Content-Type", Values: []string{"text/plain"}}, {Name: "X-Two", Values: []string{"1", "2"}}},
			ContentLength: 5, TrailerNames: []string{"X-Sum"}, BackendHttp2: true, App: "hello", RequestId: "0123abcd",
		}, Data: []byte("hello"), End: true}),
		"response": must(&Frame{Response: &tunnelv1.ResponseHead{
			Status: 200, Headers: []*tunnelv1.Header{{Name: "Content-Length", Values: []string{"2"}}},
			ContentLength: 2, TrailerNames: []string{"Grpc-Status"},
		}, Data: []byte("ok"), End: true}),
		"data":              must(&Frame{Data: []byte("a chunk of body")}),
		"end-with-trailers": must(&Frame{End: true, Trailers: []*tunnelv1.Header{{Name: "Grpc-Status", Values: []string{"0"}}}}),
		"error":             must(&Frame{Error: &tunnelv1.Error{Code: "backend-unreachable", Message: "connection refused"}}),
		// Version 2: a head whose body waits for the agent, and its go-ahead.
		"expect-continue": must(&Frame{Request: &tunnelv1.RequestHead{
			Method: "PUT", Scheme: "http", Authority: "127.0.0.1:9000", Path: "/upload", Host: "app.example.com",
			Headers:       []*tunnelv1.Header{{Name: "Expect", Values: []string{"100-continue"}}},
			ContentLength: 1 << 20, ExpectContinue: true,
		}}),
		"send-body": must(&Frame{SendBody: true}),
		// Version 3: a head that takes informational responses, and one.
		"request-informational": must(&Frame{Request: &tunnelv1.RequestHead{
			Method: "GET", Scheme: "http", Authority: "127.0.0.1:9000", Path: "/", Informational: true,
		}, End: true}),
		"informational": must(&Frame{Informational: &tunnelv1.ResponseHead{
			Status: 103, Headers: []*tunnelv1.Header{{Name: "Link", Values: []string{"</a.css>; rel=preload; as=style"}}},
		}}),
		"unknown-field": {0xca, 0x06, 0x03, 'n', 'e', 'w'}, // field 105, bytes
		"empty":         {},
		// A head with a field from a newer version, and a known field
		// (data) sent with another wire type: both are kept as unknown.
		"unknown-in-head": {0x0a, 0x07, 0x0a, 0x03, 'G', 'E', 'T', 0x70, 0x01, 0x18, 0x05}, // field 14
		"repeated-heads":  append(must(&Frame{Request: &tunnelv1.RequestHead{Method: "GET"}}), must(&Frame{Request: &tunnelv1.RequestHead{Path: "/"}})...),
		"garbage":         []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xfe\x00"),
		"truncated":       must(&Frame{Data: []byte("cut short")})[:5],
	}
}

// FuzzDecodeFrame feeds arbitrary bytes through everything that handles a
// frame received from a peer: decoding, then validating the heads and
// trailers in it. Nothing may panic, and whatever is accepted must be safe
// to hand to net/http.
func FuzzDecodeFrame(f *testing.F) {
	for _, b := range fuzzSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		checkSameAsProto(t, b, fr, err)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || fr != nil {
				t.Fatalf("DecodeFrame: %v (frame %v)", err, fr != nil)
			}
			return
		}
		var req *http.Request
		if h := fr.GetRequest(); h != nil {
			req, err = RequestFromHead(context.Background(), h)
			if err == nil {
				checkAcceptedRequest(t, h, req)
			} else if !errors.Is(err, ErrMalformed) {
				t.Fatalf("RequestFromHead: %v does not wrap ErrMalformed", err)
			}
		}
		if req == nil {
			req, _ = http.NewRequest("GET", "http://backend/", nil)
		}
		if h := fr.GetResponse(); h != nil {
			res, err := responseFromHead(h, req)
			if err == nil {
				checkAcceptedResponse(t, res)
			} else if !errors.Is(err, ErrMalformed) {
				t.Fatalf("responseFromHead: %v does not wrap ErrMalformed", err)
			}
		}
		if h := fr.GetInformational(); h != nil {
			if code, hdr, err := informationalFromHead(h); err == nil {
				checkAcceptedInformational(t, code, hdr)
			} else if !errors.Is(err, ErrMalformed) {
				t.Fatalf("informationalFromHead: %v does not wrap ErrMalformed", err)
			}
		}
		var trailers http.Header
		if err := mergeTrailers(&trailers, fr.GetTrailers()); err == nil {
			checkFields(t, "trailer", trailers)
		}
	})
}

// checkEncodesAsProto: AppendFrame writes exactly the bytes proto.Marshal
// writes for f, and FrameSize is their length.
func checkEncodesAsProto(t *testing.T, f *Frame) {
	t.Helper()
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
	if err != nil {
		t.Fatalf("proto.Marshal: %v", err)
	}
	if got := AppendFrame([]byte("prefix"), f); !bytes.Equal(got[6:], want) || string(got[:6]) != "prefix" {
		t.Fatalf("AppendFrame wrote\n%x\nproto.Marshal writes\n%x", got, want)
	}
	if n := FrameSize(f); n != len(want) {
		t.Fatalf("FrameSize = %d, proto.Marshal wrote %d bytes", n, len(want))
	}
}

// checkSameAsProto: the hand-written decoder accepts exactly what
// proto.Unmarshal accepts and produces an equal message, unknown fields
// included; the aliasing variant too, without copying the data. What it
// decoded encodes back as proto.Marshal encodes it (checkEncodesAsProto).
func checkSameAsProto(t *testing.T, b []byte, fr *Frame, err error) {
	t.Helper()
	want := new(Frame)
	werr := proto.Unmarshal(b, want)
	if len(b) > MaxFrameSize {
		werr = errors.New("too large")
	}
	if (err == nil) != (werr == nil) {
		t.Fatalf("DecodeFrame error %v, proto.Unmarshal error %v", err, werr)
	}
	if err != nil {
		return
	}
	if !proto.Equal(fr, want) {
		t.Fatalf("DecodeFrame = %v, proto.Unmarshal = %v", fr, want)
	}
	if u, w := fr.ProtoReflect().GetUnknown(), want.ProtoReflect().GetUnknown(); !bytes.Equal(u, w) {
		t.Fatalf("unknown fields %x, proto.Unmarshal kept %x", u, w)
	}
	checkEncodesAsProto(t, fr)
	in := bytes.Clone(b)
	fa := new(Frame)
	if err := UnmarshalFrameAliasing(in, fa); err != nil {
		t.Fatalf("UnmarshalFrameAliasing: %v; proto.Unmarshal = %v", err, want)
	}
	checkReceivedHeaders(t, fa, want)
	if len(fa.Data) > 0 && &fa.Data[0] != &in[cap(in)-cap(fa.Data)] {
		t.Fatal("UnmarshalFrameAliasing copied the data")
	}
}

// checkReceivedHeaders: UnmarshalFrameAliasing decodes what proto.Unmarshal
// decodes (want), except that the headers of the request and response
// heads go straight into an http.Header: that header, or its error, is
// exactly what headersFromWire makes of want's Header messages.
func checkReceivedHeaders(t *testing.T, fa, want *Frame) {
	t.Helper()
	want = proto.Clone(want).(*Frame)
	// A second head in the frame, merged into the first, is decoded the
	// usual way and compared in full.
	if h := fa.GetRequest(); h != nil && receivedRequestOf(h) != nil {
		if len(h.Headers) != 0 {
			t.Fatalf("request head decoded with %d Header messages too", len(h.Headers))
		}
		got, gerr := requestHeader(h)
		hdr, err := headersFromWire(want.GetRequest().GetHeaders(), "request")
		checkSameHeader(t, "request", got, gerr, hdr, err)
		want.Request.Headers = nil
	}
	// A second head in the frame, merged into the first, is decoded the
	// usual way and compared in full.
	if h := fa.GetResponse(); h != nil && receivedResponseOf(h) != nil {
		if len(h.Headers) != 0 {
			t.Fatalf("response head decoded with %d Header messages too", len(h.Headers))
		}
		got, gerr := responseHeader(h)
		hdr, err := headersFromWire(want.GetResponse().GetHeaders(), "response")
		checkSameHeader(t, "response", got, gerr, hdr, err)
		want.Response.Headers = nil
	}
	if !proto.Equal(fa, want) {
		t.Fatalf("UnmarshalFrameAliasing = %v; want %v (headers aside)", fa, want)
	}
	if u, w := fa.ProtoReflect().GetUnknown(), want.ProtoReflect().GetUnknown(); !bytes.Equal(u, w) {
		t.Fatalf("UnmarshalFrameAliasing kept unknown fields %x, proto.Unmarshal %x", u, w)
	}
}

func checkSameHeader(t *testing.T, what string, got http.Header, gerr error, want http.Header, werr error) {
	t.Helper()
	if fmt.Sprint(gerr) != fmt.Sprint(werr) || !reflect.DeepEqual(got, want) {
		t.Fatalf("%s headers decoded as %q, %v; headersFromWire makes %q, %v", what, got, gerr, want, werr)
	}
}

// checkAcceptedRequest: a request the agent accepts goes to the backend it
// names and cannot inject anything into the request it writes.
func checkAcceptedRequest(t *testing.T, h *tunnelv1.RequestHead, req *http.Request) {
	t.Helper()
	if req.URL.Scheme != h.GetScheme() || req.URL.Host != h.GetAuthority() || req.Host != h.GetHost() {
		t.Fatalf("request goes to %s://%s (Host %q), head said %s://%s (Host %q)",
			req.URL.Scheme, req.URL.Host, req.Host, h.GetScheme(), h.GetAuthority(), h.GetHost())
	}
	if !validMethod(req.Method) || req.ContentLength < -1 {
		t.Fatalf("accepted method %q, length %d", req.Method, req.ContentLength)
	}
	uri := req.URL.RequestURI()
	if strings.ContainsAny(uri, " \r\n\x00") {
		t.Fatalf("request-URI %q would break the request line", uri)
	}
	checkFields(t, "header", req.Header)
	checkFields(t, "trailer", req.Trailer)
	// The gateway's own check lets through whatever the agent accepts.
	if err := CheckRequestHead(req); err != nil {
		t.Fatalf("the agent accepts a head that CheckRequestHead refuses: %v", err)
	}
	// Writing the request must not fail on anything the checks let through.
	req.Body = nil
	req.ContentLength = 0
	if err := req.Write(io.Discard); err != nil {
		t.Fatalf("an accepted request cannot be written: %v", err)
	}
}

func checkAcceptedResponse(t *testing.T, res *http.Response) {
	t.Helper()
	if res.StatusCode < 100 || res.StatusCode > 999 || res.ContentLength < -1 {
		t.Fatalf("accepted status %d, length %d", res.StatusCode, res.ContentLength)
	}
	checkFields(t, "header", res.Header)
	checkFields(t, "trailer", res.Trailer)
}

// checkAcceptedInformational: an accepted informational response has a
// status that may be relayed as one, and safe headers.
func checkAcceptedInformational(t *testing.T, code int, h http.Header) {
	t.Helper()
	if code < 102 || code > 199 || code == http.StatusSwitchingProtocols {
		t.Fatalf("accepted informational status %d", code)
	}
	checkFields(t, "informational header", h)
}

// checkFields: every accepted field is canonical and holds no line break.
func checkFields(t *testing.T, what string, h http.Header) {
	t.Helper()
	for k, vv := range h {
		if k != http.CanonicalHeaderKey(k) || strings.ContainsAny(k, " :\r\n") {
			t.Fatalf("accepted %s name %q", what, k)
		}
		for _, v := range vv {
			if strings.ContainsAny(v, "\r\n\x00") {
				t.Fatalf("accepted %s value %q", what, v)
			}
		}
	}
}

// TestFuzzSeedCorpus keeps the committed seed files equal to fuzzSeeds, so
// that `go test` always runs every seed. Run with -update-fuzz-seeds after
// changing the seeds.
func TestFuzzSeedCorpus(t *testing.T) {
	seeds := fuzzSeeds()
	// The head seeds must pass validation, so the fuzzer starts from
	// inputs that reach the checks of accepted heads.
	fr, err := DecodeFrame(seeds["request"])
	if err != nil {
		t.Fatal(err)
	}
	req, err := RequestFromHead(context.Background(), fr.GetRequest())
	if err != nil {
		t.Fatalf("request seed: %v", err)
	}
	checkAcceptedRequest(t, fr.GetRequest(), req)
	if fr, err = DecodeFrame(seeds["response"]); err != nil {
		t.Fatal(err)
	}
	if _, err := responseFromHead(fr.GetResponse(), req); err != nil {
		t.Fatalf("response seed: %v", err)
	}

	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeFrame")
	for name, b := range seeds {
		path := filepath.Join(dir, "seed-"+name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s is missing or stale (%v); run go test ./tunnel -run TestFuzzSeedCorpus -update-fuzz-seeds", path, err)
		}
	}
}
