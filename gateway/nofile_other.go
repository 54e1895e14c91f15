//go:build !unix

package gateway

// openFileLimit: no RLIMIT_NOFILE here; 0 (unknown).
func openFileLimit() int { return 0 }
