package tunneltest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// ExpectBackend is the backend that CheckExpectContinue needs behind the
// session's agent: it refuses a request to /refuse with 417 without
// reading its body, as a backend that answers "Expect: 100-continue" with
// a final status does, and echoes the body of any other request.
var ExpectBackend = RoundTripFunc(func(req *http.Request) (*http.Response, error) {
	res := &http.Response{
		StatusCode: http.StatusExpectationFailed, ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: http.NoBody, Request: req,
	}
	if req.URL.Path == "/refuse" {
		return res, nil
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	res.StatusCode, res.ContentLength, res.Body = http.StatusOK, int64(len(body)), io.NopCloser(bytes.NewReader(body))
	return res, nil
})

// CountingReader is a request body that counts its reads: a test tells
// from it whether a body was read at all.
type CountingReader struct {
	R     io.Reader
	reads atomic.Int32
}

func (b *CountingReader) Read(p []byte) (int, error) {
	b.reads.Add(1)
	return b.R.Read(p)
}

// Reads is the number of Read calls so far.
func (b *CountingReader) Reads() int32 { return b.reads.Load() }

// CheckExpectContinue relays requests with "Expect: 100-continue" over s,
// whose agent (of this version) answers with ExpectBackend, as the gateway
// does: the session must say the current protocol version; a refused
// request's body must stay unread; an accepted one, of a size that travels
// with the head otherwise and of several chunks, must arrive whole. Every
// transport runs it, so the new fields cross each one's codec.
func CheckExpectContinue(t *testing.T, s tunnel.Session) {
	t.Helper()
	if v := s.Info().ProtocolVersion; v != tunnel.ProtocolVersion {
		t.Fatalf("session protocol version %d, want %d", v, tunnel.ProtocolVersion)
	}
	for _, tc := range []struct {
		path string
		size int
		want int // status
	}{
		{"/refuse", 3 * tunnel.ChunkSize, http.StatusExpectationFailed},
		{"/small", 100, http.StatusOK},
		{"/large", 3*tunnel.ChunkSize + 1, http.StatusOK},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sent := []byte(strings.Repeat("e", tc.size))
		body := &CountingReader{R: bytes.NewReader(sent)}
		req, err := http.NewRequestWithContext(ctx, "PUT", "http://backend:80"+tc.path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(tc.size)
		req.Header.Set("Expect", "100-continue")
		st, err := s.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v := s.Info().ProtocolVersion
		res, err := tunnel.RoundTrip(st, req, &tunnel.Options{ExpectContinue: v >= tunnel.VersionExpectContinue})
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		switch {
		case err != nil:
			t.Fatalf("%s: response body: %v", tc.path, err)
		case res.StatusCode != tc.want:
			t.Fatalf("%s: status %d, want %d", tc.path, res.StatusCode, tc.want)
		case tc.want != http.StatusOK && body.Reads() != 0:
			t.Fatalf("%s: the refused body was read %d times", tc.path, body.Reads())
		case tc.want == http.StatusOK && !bytes.Equal(got, sent):
			t.Fatalf("%s: echo of %d bytes, want %d", tc.path, len(got), len(sent))
		}
	}
}

// VersionCase is one pairing of agent and gateway protocol versions.
type VersionCase struct {
	Name           string
	Agent, Gateway uint32 // announced; 0: this build's
	Want           uint32 // the session's
}

// VersionCases are the pairings every transport checks: either side may
// be the older one, and the session speaks the lower version.
var VersionCases = []VersionCase{
	{"both current", 0, 0, tunnel.ProtocolVersion},
	{"older agent", 1, 0, 1},
	{"older gateway", 0, 1, 1},
}
