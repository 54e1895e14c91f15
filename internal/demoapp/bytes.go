package demoapp

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// MaxBytes is the largest N /bytes/N serves: 1 TiB.
const MaxBytes = 1 << 40

// bytesChunk is how much /bytes?chunked=1 generates and writes at a time.
const bytesChunk = 32 << 10

// The byte stream is a counter-mode SplitMix64: the 8 bytes at offset 8k are word(k) in little
// endian. Every /bytes/N body is the first N bytes of that one stream, so any offset can be produced
// without generating what comes before it (Range requests, Seek) and the stream costs about a
// nanosecond per word. It is not random in any cryptographic sense, and need not be.
const (
	streamSeed  = 0x53616c6c79706f72 // "Sallypor"
	streamGamma = 0x9e3779b97f4a7c15
)

func word(k uint64) uint64 {
	z := streamSeed + (k+1)*streamGamma
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// fillBytes fills p with the stream's bytes starting at offset off.
func fillBytes(p []byte, off int64) {
	k := uint64(off) / 8
	// Slow path: a start that is not word-aligned takes the tail of one word.
	if s := off % 8; s != 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], word(k))
		p = p[copy(p, w[s:]):]
		k++
	}
	// Fast path: whole words straight into p.
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], word(k))
		k++
	}
	// Slow path: a partial last word.
	if i < len(p) {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], word(k))
		copy(p[i:], w[:])
	}
}

// NewBytesReader returns a reader of exactly the n bytes that /bytes/n serves. Tests can upload it
// to /echo or compare downloads with it. It seeks, so http.ServeContent can answer Range requests.
func NewBytesReader(n int64) io.ReadSeeker {
	return &bytesReader{size: max(n, 0)}
}

// BytesSHA256 returns the SHA-256 of the body of /bytes/n. It generates and hashes all n bytes.
func BytesSHA256(n int64) [32]byte {
	h := sha256.New()
	_, _ = io.CopyBuffer(h, NewBytesReader(n), make([]byte, bytesChunk))
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// bytesReader reads the first size bytes of the stream.
type bytesReader struct {
	size int64 // never changes
	off  int64 // next offset to read; may be past size after a Seek
}

func (b *bytesReader) Read(p []byte) (int, error) {
	if b.off >= b.size {
		return 0, io.EOF
	}
	if rem := b.size - b.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	fillBytes(p, b.off)
	b.off += int64(len(p))
	return len(p), nil
}

func (b *bytesReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += b.off
	case io.SeekEnd:
		offset += b.size
	default:
		return 0, errors.New("demoapp: seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("demoapp: seek: negative position")
	}
	b.off = offset
	return offset, nil
}

// serveBytes streams the first N bytes of the stream. By default it declares Content-Length N and
// honours Range requests (via http.ServeContent; no Last-Modified or ETag, so no 304s). With ?chunked=1 it sends no length and ends with
// an X-Body-Sha256 trailer holding the hex SHA-256 of the body, which is how a test can check a
// chunked body end to end.
func (a *app) serveBytes(w http.ResponseWriter, r *http.Request) {
	s := r.PathValue("n")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > MaxBytes {
		http.Error(w, fmt.Sprintf("size %q: want a whole number from 0 to %d", s, int64(MaxBytes)), http.StatusBadRequest)
		return
	}
	chunked := false
	if s := r.URL.Query().Get("chunked"); s != "" {
		if chunked, err = strconv.ParseBool(s); err != nil {
			http.Error(w, fmt.Sprintf("chunked %q: want 1 or 0", s), http.StatusBadRequest)
			return
		}
	}

	w.Header().Set("Content-Type", "application/octet-stream")
	if !chunked {
		http.ServeContent(w, r, "", time.Time{}, NewBytesReader(n))
		return
	}
	writeChunkedBytes(w, r, n)
}

// writeChunkedBytes writes n stream bytes without a Content-Length, hashing them on the way, and
// sets the X-Body-Sha256 trailer at the end.
func writeChunkedBytes(w http.ResponseWriter, r *http.Request, n int64) {
	w.Header().Set("Trailer", "X-Body-Sha256")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	h := sha256.New()
	buf := make([]byte, bytesChunk)
	for off := int64(0); off < n; {
		p := buf[:min(int64(len(buf)), n-off)]
		fillBytes(p, off)
		h.Write(p)
		if _, err := w.Write(p); err != nil {
			return // The client went away; there is no one to send the trailer to.
		}
		off += int64(len(p))
	}
	w.Header().Set("X-Body-Sha256", hex.EncodeToString(h.Sum(nil)))
}
