package tunnel

import "errors"

// Identity is who the agent of a session is, as the gateway decided from
// its credential (its verified client certificate).
type Identity struct {
	ConnectorID string // enrolled connector; its sessions share it
	Group       string // connector group
}

// ErrRevoked refuses a connector that an administrator revoked. Transports
// report it to the agent distinctly (the gRPC transport as
// PERMISSION_DENIED "revoked: …"), so the agent stops instead of retrying.
var ErrRevoked = errors.New("revoked")
