package demoapp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
)

// digestSizes cover the empty body, partial words, one chunk exactly and an odd size spanning many
// chunks.
var digestSizes = []int64{0, 1, 7, 8, 9, 32768, 32769, 1000003}

// readAll returns the first n bytes of the stream.
func readAll(t testing.TB, n int64) []byte {
	t.Helper()
	b, err := io.ReadAll(NewBytesReader(n))
	if err != nil || int64(len(b)) != n {
		t.Fatalf("NewBytesReader(%d): %d bytes, %v", n, len(b), err)
	}
	return b
}

func TestBytesSHA256MatchesReader(t *testing.T) {
	for _, n := range digestSizes {
		if got, want := BytesSHA256(n), sha256.Sum256(readAll(t, n)); got != want {
			t.Errorf("BytesSHA256(%d) = %x, want %x", n, got, want)
		}
	}
	if got, want := BytesSHA256(0), sha256.Sum256(nil); got != want {
		t.Errorf("BytesSHA256(0) = %x, want the empty digest", got)
	}
}

func TestBytesDigest(t *testing.T) {
	srv := newServer(t, New())
	for _, n := range digestSizes {
		t.Run(strconv.FormatInt(n, 10), func(t *testing.T) {
			resp, body := do(t, srv, http.MethodGet, fmt.Sprintf("/bytes/%d", n), nil)
			if resp.StatusCode != http.StatusOK || resp.ContentLength != n {
				t.Fatalf("status %d, Content-Length %d; want 200, %d", resp.StatusCode, resp.ContentLength, n)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
				t.Errorf("Content-Type = %q", ct)
			}
			if got, want := sha256.Sum256([]byte(body)), BytesSHA256(n); got != want {
				t.Errorf("body digest %x, want %x", got, want)
			}
		})
	}
}

func TestBytesChunkedTrailer(t *testing.T) {
	srv := newServer(t, New())
	for _, n := range digestSizes {
		t.Run(strconv.FormatInt(n, 10), func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, fmt.Sprintf("%s/bytes/%d?chunked=1", srv.URL, n), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ContentLength != -1 {
				t.Fatalf("status %d, Content-Length %d; want 200 and no length", resp.StatusCode, resp.ContentLength)
			}
			if _, declared := resp.Trailer["X-Body-Sha256"]; !declared {
				t.Errorf("trailer not declared: Trailer = %v", resp.Trailer)
			}
			h := sha256.New()
			if _, err := io.Copy(h, resp.Body); err != nil {
				t.Fatal(err)
			}
			want := BytesSHA256(n)
			if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
				t.Errorf("body digest %x, want %x", got, want)
			}
			if got := resp.Trailer.Get("X-Body-Sha256"); got != hex.EncodeToString(want[:]) {
				t.Errorf("X-Body-Sha256 trailer = %q, want %x", got, want)
			}
		})
	}
}

func TestBytesDeterministic(t *testing.T) {
	srv := newServer(t, New())
	_, a := do(t, srv, http.MethodGet, "/bytes/100000", nil)
	_, b := do(t, srv, http.MethodGet, "/bytes/100000", nil)
	_, c := do(t, srv, http.MethodGet, "/bytes/1000", nil)
	if a != b {
		t.Error("two downloads of /bytes/100000 differ")
	}
	if a[:1000] != c {
		t.Error("/bytes/1000 is not a prefix of /bytes/100000")
	}
	seen := map[byte]bool{}
	for i := range 8192 {
		seen[a[i]] = true
	}
	if len(seen) != 256 {
		t.Errorf("only %d distinct byte values in the first 8 KiB", len(seen))
	}
}

func TestBytesReaderSeek(t *testing.T) {
	const size = 2048
	ref := readAll(t, size)
	r := NewBytesReader(size)
	for _, off := range []int64{0, 1, 3, 7, 8, 9, 15, 16, 1001, 2040, 2047} {
		for _, n := range []int{0, 1, 5, 8, 13, 100} {
			if _, err := r.Seek(off, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, n)
			k, _ := io.ReadFull(r, got)
			want := ref[off:min(off+int64(n), size)]
			if !bytes.Equal(got[:k], want) {
				t.Errorf("at %d, %d bytes: got %x, want %x", off, n, got[:k], want)
			}
		}
	}
	if pos, err := r.Seek(-10, io.SeekEnd); err != nil || pos != size-10 {
		t.Errorf("Seek(-10, End) = %d, %v", pos, err)
	}
	if pos, err := r.Seek(3, io.SeekCurrent); err != nil || pos != size-7 {
		t.Errorf("Seek(3, Current) = %d, %v", pos, err)
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Error("Seek(-1, Start) succeeded")
	}
	if _, err := r.Seek(size+5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Errorf("Read past the end = %d, %v; want 0, EOF", n, err)
	}
}

func TestBytesRangeAndHead(t *testing.T) {
	srv := newServer(t, New())
	ref := readAll(t, 100)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/bytes/100", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=10-19")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, ref[10:20]) {
		t.Errorf("Range bytes=10-19: %d %x, %v; want 206 %x", resp.StatusCode, body, err, ref[10:20])
	}

	resp, _ = do(t, srv, http.MethodHead, fmt.Sprintf("/bytes/%d", int64(MaxBytes)), nil)
	if resp.StatusCode != http.StatusOK || resp.ContentLength != MaxBytes {
		t.Errorf("HEAD /bytes/MaxBytes = %d with length %d", resp.StatusCode, resp.ContentLength)
	}

	for _, target := range []string{
		fmt.Sprintf("/bytes/%d", int64(MaxBytes)+1), "/bytes/-1", "/bytes/ten", "/bytes/10?chunked=maybe",
	} {
		if resp, body := do(t, srv, http.MethodGet, target, nil); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s = %d %q, want 400", target, resp.StatusCode, body)
		}
	}
}

// TestBytesClientLeaves starts a 1 TiB download, reads a little and hangs up; the handler must stop.
func TestBytesClientLeaves(t *testing.T) {
	for _, query := range []string{"", "?chunked=1"} {
		t.Run("query="+query, func(t *testing.T) {
			h, done := finished(New())
			srv := newServer(t, h)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/bytes/%d%s", srv.URL, int64(MaxBytes), query), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
				t.Fatal(err)
			}
			cancel()
			resp.Body.Close()
			waitFinished(t, done)
		})
	}
}

func TestFillBytesNoAlloc(t *testing.T) {
	buf := make([]byte, bytesChunk)
	off := int64(3)
	allocs := testing.AllocsPerRun(100, func() {
		fillBytes(buf, off)
		off += int64(len(buf))
	})
	if allocs != 0 {
		t.Errorf("fillBytes allocates %v times per call, want 0", allocs)
	}
}

func BenchmarkBytesReader(b *testing.B) {
	for _, size := range []int{512, 32 << 10} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			buf := make([]byte, size)
			r := NewBytesReader(MaxBytes)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := r.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkBytesHandler(b *testing.B) {
	for _, size := range []int64{1 << 10, 1 << 20, 16 << 20} {
		for _, query := range []string{"", "?chunked=1"} {
			b.Run(fmt.Sprintf("%d%s", size, query), func(b *testing.B) {
				srv := newServer(b, New())
				url := fmt.Sprintf("%s/bytes/%d%s", srv.URL, size, query)
				b.ReportAllocs()
				b.SetBytes(size)
				for b.Loop() {
					resp, err := srv.Client().Get(url)
					if err != nil {
						b.Fatal(err)
					}
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
