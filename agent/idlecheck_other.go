//go:build !unix

package agent

// rawWaits: no flushing inside a RawConn wait outside Unix (its waits work
// differently there); connections take the plain path and cannot be
// checked for bytes sent while idle, so Backends leaves every request to
// net/http's Transport there, and h1Sync does not reuse a connection it
// cannot check (h1Conn.checkable).
const rawWaits = false

// idleCheck is not used outside Unix.
func idleCheck(uintptr) error { return nil }
