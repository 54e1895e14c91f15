package gateway

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
)

// RequestIDHeader carries the request id to the backend, in the gateway's
// answers and in its logs.
const RequestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds a request id accepted from a trusted proxy.
const maxRequestIDLen = 128

// RequestID returns in when it is a sane request id (1 to 128 characters of
// A-Z a-z 0-9 . _ : -), so that an id set by a load balancer in front of the
// gateway follows the request, and otherwise a new random id. Only
// characters that cannot break a header, a log line or an HTML page pass.
// The public listener hands in only a trusted proxy's id: from any other
// peer the header is gone before the exchange reads it (untrustedPeer).
func RequestID(in string) string {
	if saneRequestID(in) {
		return in
	}
	return NewRequestID()
}

func saneRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// NewRequestID returns 16 random bytes in hex (32 characters).
//
// The bytes come from math/rand/v2's top-level generator: the runtime keeps
// one ChaCha8 state per thread, seeded once from the operating system's
// entropy, so a new id costs two calls into that state: no system call, no
// lock shared between requests and no allocation besides the string. That
// is plenty for an id whose job is to be unique: request ids are logged and
// echoed to clients, never trusted as secrets.
func NewRequestID() string {
	var raw [16]byte
	binary.LittleEndian.PutUint64(raw[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(raw[8:], rand.Uint64())
	var out [32]byte
	hex.Encode(out[:], raw[:])
	return string(out[:])
}
