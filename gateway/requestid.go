package gateway

import (
	crand "crypto/rand"
	"encoding/hex"
	"math/rand/v2"
	"sync"
)

// RequestIDHeader carries the request id to the backend, in the gateway's
// answers and in its logs.
const RequestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds a request id accepted from a client.
const maxRequestIDLen = 128

// RequestID returns in when it is a sane request id (1 to 128 characters of
// A-Z a-z 0-9 . _ : -), so that an id set by a load balancer in front of the
// gateway follows the request, and otherwise a new random id. Only
// characters that cannot break a header, a log line or an HTML page pass.
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

// idSources holds ChaCha8 generators, each seeded once from crypto/rand.
// A pool instead of one generator behind a mutex keeps concurrent requests
// from contending; a generator the pool drops is simply replaced by a newly
// seeded one. ChaCha8 is a cryptographically strong generator, so ids are
// unpredictable and collide no more often than 128 random bits do, at a
// fraction of the cost of a getrandom call per request.
var idSources = sync.Pool{
	New: func() any {
		var seed [32]byte
		_, _ = crand.Read(seed[:]) // never fails (Go 1.24+: crypto/rand.Read crashes instead)
		return rand.NewChaCha8(seed)
	},
}

// NewRequestID returns 16 random bytes in hex (32 characters).
func NewRequestID() string {
	src := idSources.Get().(*rand.ChaCha8)
	var raw [16]byte
	_, _ = src.Read(raw[:]) // ChaCha8.Read never fails
	idSources.Put(src)
	var out [32]byte
	hex.Encode(out[:], raw[:])
	return string(out[:])
}
