//go:build !unix

package agent

// rawWaits: no flushing inside a RawConn wait outside Unix (its waits work
// differently there); connections take the plain path and are not checked.
const rawWaits = false

// idleCheck is not used outside Unix.
func idleCheck(uintptr) error { return nil }
