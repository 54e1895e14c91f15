// Package store keeps the gateway's state that must survive restarts: the
// connector CA, enrolled connectors (and their revocation) and enrollment
// tokens (hashed), users' sign-outs and secrets that replicas share. DB
// is the one implementation, on two databases: an embedded SQLite file
// (pure Go) in data_dir by default (Open), or PostgreSQL when several
// gateway replicas share their state (OpenPostgres).
//
// The SQL is portable and the same for both (TEXT, INTEGER and BIGINT
// columns, ids made by the caller, times as Unix nanoseconds, `$n`
// placeholders, which SQLite reads as positional too, ON CONFLICT and
// RETURNING, no database's own functions); the dialect holds the little
// that differs. Schema changes are numbered migrations applied at open
// time and recorded in schema_version.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Errors of the store. Callers classify with errors.Is.
var (
	ErrNotFound     = errors.New("not found")
	ErrTokenUsedUp  = errors.New("token already used")
	ErrTokenExpired = errors.New("token expired")
)

// Unavailable reports whether err says the database did not answer, as
// opposed to answering no: a server that is down, unreachable, restarting
// or too slow (CallTimeout), or a connection it closed. Such a call may
// work when retried later, and nothing it was to change has changed
// unless its error says so. Callers tell their clients to retry (503),
// not that what they asked for is wrong.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var (
		pgErr     *pgconn.PgError
		netErr    net.Error
		connErr   *pgconn.ConnectError
		sqliteErr interface{ Code() int }
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.As(err, &connErr), errors.As(err, &netErr), pgconn.Timeout(err):
		return true
	case errors.As(err, &sqliteErr):
		// Another process holds the file's lock past busy_timeout (a
		// backup, the CLI): it may work when retried.
		code := sqliteErr.Code() & 0xff
		return code == 5 || code == 6 // SQLITE_BUSY, SQLITE_LOCKED
	case errors.As(err, &pgErr):
		// Class 08: connection exception; 57P01-57P05: the server shuts
		// down, crashed, is starting, or ended an idle session; 53300:
		// too many connections; 57014: a statement cancelled (timeout).
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P") || pgErr.Code == "57014" || pgErr.Code == "53300"
	}
	return false
}

// CA is one connector CA certificate and its private key.
type CA struct {
	ID      string
	CertPEM []byte
	KeyPEM  []byte // PKCS #8 PEM; never leaves the gateway
	// Active marks the CA that signs new certificates; exactly one is.
	// Inactive CAs stay in the trust bundle until retired.
	Active  bool
	Created time.Time
}

// Token is an enrollment token. The secret itself is never stored, only
// its SHA-256.
type Token struct {
	ID      string
	Hash    [32]byte
	Group   string
	MaxUses int // 0 = unlimited
	Used    int
	Expires time.Time // zero = never
	Created time.Time
}

// Check reports whether t has a use left at now: nil, ErrTokenExpired
// (checked first) or ErrTokenUsedUp.
func (t Token) Check(now time.Time) error {
	switch {
	case !t.Expires.IsZero() && !now.Before(t.Expires):
		return ErrTokenExpired
	case t.MaxUses > 0 && t.Used >= t.MaxUses:
		return ErrTokenUsedUp
	}
	return nil
}

// Connector is one enrolled agent.
type Connector struct {
	ID          string
	Name        string
	Group       string
	Version     string
	Platform    string
	Enrolled    time.Time
	CertSerial  string    // hex serial of the newest certificate issued
	CertExpires time.Time // its NotAfter
	// CertInUse records that the agent presented CertSerial (a session or
	// a renewal): it has the newest certificate, so older ones of this
	// connector are retired. False until then, so that an agent whose
	// renewal answer was lost keeps working with its previous one.
	CertInUse bool
	// CertIssued is the NotBefore of the newest certificate recorded in
	// use (CertSerial once CertInUse, until then the one it replaces; zero
	// if none was yet): certificates of this connector issued before it
	// are retired, and one issued after it while CertInUse is newer than
	// the store knows (a restored backup).
	CertIssued time.Time
	Revoked    time.Time // zero = not revoked
}
