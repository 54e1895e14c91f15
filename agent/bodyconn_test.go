package agent

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"testing"
)

// piecesBody is a request body like the tunnel's: it can write itself
// (WriteBodyTo), here in pieces of 1000 bytes, and counts how it was read.
type piecesBody struct {
	r         *bytes.Reader
	writeTos  int   // WriteBodyTo calls
	writeToed int64 // bytes they wrote
}

func (b *piecesBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *piecesBody) Close() error               { return nil }

func (b *piecesBody) WriteBodyTo(w io.Writer, max int64) (int64, error) {
	b.writeTos++
	var n int64
	for n < max && b.r.Len() > 0 {
		m, err := io.CopyN(w, b.r, min(1000, max-n))
		n += m
		if err != nil {
			return n, err
		}
	}
	b.writeToed += n
	return n, nil
}

// TestBackendsBodyWritesItself: a request body of known length that can
// write itself reaches an HTTP/1.1 backend through WriteBodyTo, intact; a
// chunked one is read as usual.
func TestBackendsBodyWritesItself(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	srv := startPlainBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil || n != int64(len(payload)) || !bytes.Equal(h.Sum(nil), sha(payload)) {
			http.Error(w, "body damaged", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	b := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	for _, known := range []bool{true, false} {
		body := &piecesBody{r: bytes.NewReader(payload)}
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/upload", body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1
		if known {
			req.ContentLength = int64(len(payload))
		}
		res, err := b.Transport(req, false).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent {
			t.Fatalf("known length %v: status %d", known, res.StatusCode)
		}
		// net/http sends the first bytes with the head, then the rest.
		switch {
		case known && (body.writeTos == 0 || body.writeToed < int64(len(payload))-4096):
			t.Errorf("known length: WriteBodyTo called %d times for %d bytes; want the body but its first bytes", body.writeTos, body.writeToed)
		case !known && body.writeTos != 0:
			t.Errorf("chunked: WriteBodyTo called %d times, want none", body.writeTos)
		}
	}
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
