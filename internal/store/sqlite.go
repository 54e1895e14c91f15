package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// FileName is the store's database file inside data_dir.
const FileName = "sallyport.db"

// SQLite is the embedded store. It is safe for concurrent use, also by
// several processes on the same file (`sallyport gateway ca rotate` while
// the gateway runs): writers wait for each other up to five seconds.
type SQLite struct {
	db *sql.DB
}

// Open opens (creating if needed, mode 0600 in a 0700 directory) the store
// in dir and applies pending migrations.
func Open(ctx context.Context, dir string) (*SQLite, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	path := filepath.Join(dir, FileName)
	// Create the file with 0600 ourselves: SQLite gives its journal files
	// the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	f.Close()
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	return openDSN(ctx, "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate")
}

// OpenMemory opens a store that lives only as long as the process (tests,
// and gateways started without a data directory).
func OpenMemory(ctx context.Context) (*SQLite, error) {
	return openDSN(ctx, "file::memory:?_txlock=immediate")
}

func openDSN(ctx context.Context, dsn string) (*SQLite, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// One connection: SQLite has one writer anyway, and an in-memory
	// database exists per connection.
	db.SetMaxOpenConns(1)
	s := &SQLite{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	return s, nil
}

// Close closes the database.
func (s *SQLite) Close() error { return s.db.Close() }

// Ping checks the database answers (readiness).
func (s *SQLite) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// migrations are applied in order; migrations[i] brings the schema to
// version i+1. Never edit one that has shipped: add a new one.
var migrations = []string{
	`CREATE TABLE cas (
		id         TEXT PRIMARY KEY,
		cert_pem   TEXT NOT NULL,
		key_pem    TEXT NOT NULL,
		active     INTEGER NOT NULL,
		created_at BIGINT NOT NULL
	);
	CREATE TABLE tokens (
		id         TEXT PRIMARY KEY,
		hash       TEXT NOT NULL UNIQUE,
		group_name TEXT NOT NULL,
		max_uses   INTEGER NOT NULL,
		used       INTEGER NOT NULL,
		expires_at BIGINT NOT NULL,
		created_at BIGINT NOT NULL
	);
	CREATE TABLE connectors (
		id           TEXT PRIMARY KEY,
		name         TEXT NOT NULL,
		group_name   TEXT NOT NULL,
		version      TEXT NOT NULL,
		platform     TEXT NOT NULL,
		enrolled_at  BIGINT NOT NULL,
		cert_serial  TEXT NOT NULL,
		cert_expires BIGINT NOT NULL,
		revoked_at   BIGINT NOT NULL
	);`,
	// 2: a renewal retires the previous certificate once the new one is in
	// use. Connectors of older databases start as "not yet in use", so
	// every certificate they hold keeps working until the newest is seen.
	`ALTER TABLE connectors ADD COLUMN cert_in_use INTEGER NOT NULL DEFAULT 0;`,
	// 3: the NotBefore of the newest certificate in use, so that the
	// older ones stay retired after the next renewal, and a certificate
	// newer than the one recorded (the store was restored from a backup)
	// is told apart from a retired one. Connectors marked in use
	// without it start as "not yet in use" again: their agent's next
	// session records both.
	`ALTER TABLE connectors ADD COLUMN cert_issued BIGINT NOT NULL DEFAULT 0;
	UPDATE connectors SET cert_in_use = 0;`,
	// 4: user sessions signed out, until they would have ended, so that
	// every gateway on the store, and a restarted one, refuses copies of
	// their cookies.
	`CREATE TABLE signed_out (
		id      TEXT PRIMARY KEY,
		expires BIGINT NOT NULL
	);`,
}

// SchemaVersion is the schema version this build writes.
var SchemaVersion = len(migrations)

func (s *SQLite) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("schema_version: %w", err)
	}
	var have int
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&have)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("schema_version: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("the database has schema version %d but this build knows only up to %d; "+
			"run a newer sallyport (or restore a backup made with this version)", have, len(migrations))
	}
	for v := have; v < len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migration to schema version %d: %w", v+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(migrations)); err != nil {
		return err
	}
	return tx.Commit()
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// CAs returns every CA in the trust bundle, oldest first.
func (s *SQLite) CAs(ctx context.Context) ([]CA, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, cert_pem, key_pem, active, created_at FROM cas ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("read connector CAs: %w", err)
	}
	defer rows.Close()
	var out []CA
	for rows.Next() {
		var c CA
		var cert, key string
		var active int
		var created int64
		if err := rows.Scan(&c.ID, &cert, &key, &active, &created); err != nil {
			return nil, fmt.Errorf("read connector CAs: %w", err)
		}
		c.CertPEM, c.KeyPEM, c.Active, c.Created = []byte(cert), []byte(key), active == 1, fromNano(created)
		out = append(out, c)
	}
	return out, rows.Err()
}

// AddCA adds ca to the trust bundle. When ca is active, every other CA
// becomes inactive in the same transaction. When onlyIfNone is set and a CA
// exists already, nothing is added and ok is false (two processes starting
// on an empty store create one CA, not two).
func (s *SQLite) AddCA(ctx context.Context, ca CA, onlyIfNone bool) (ok bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("add connector CA: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if onlyIfNone {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM cas`).Scan(&n); err != nil {
			return false, fmt.Errorf("add connector CA: %w", err)
		}
		if n > 0 {
			return false, nil
		}
	}
	if ca.Active {
		if _, err := tx.ExecContext(ctx, `UPDATE cas SET active = 0`); err != nil {
			return false, fmt.Errorf("add connector CA: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO cas (id, cert_pem, key_pem, active, created_at) VALUES (?, ?, ?, ?, ?)`,
		ca.ID, string(ca.CertPEM), string(ca.KeyPEM), boolInt(ca.Active), unixNano(ca.Created)); err != nil {
		return false, fmt.Errorf("add connector CA: %w", err)
	}
	return true, tx.Commit()
}

// RetireCAs removes every inactive CA from the trust bundle and returns how
// many it removed.
func (s *SQLite) RetireCAs(ctx context.Context) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM cas WHERE active = 0`)
	if err != nil {
		return 0, fmt.Errorf("retire connector CAs: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// CreateToken stores a new enrollment token.
func (s *SQLite) CreateToken(ctx context.Context, t Token) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO tokens (id, hash, group_name, max_uses, used, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		t.ID, hex.EncodeToString(t.Hash[:]), t.Group, t.MaxUses, t.Used, unixNano(t.Expires), unixNano(t.Created))
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	return nil
}

// Tokens lists the enrollment tokens, oldest first.
func (s *SQLite) Tokens(ctx context.Context) ([]Token, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, hash, group_name, max_uses, used, expires_at, created_at FROM tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

type scanner interface{ Scan(...any) error }

func scanToken(r scanner) (Token, error) {
	var t Token
	var hash string
	var expires, created int64
	if err := r.Scan(&t.ID, &hash, &t.Group, &t.MaxUses, &t.Used, &expires, &created); err != nil {
		return t, err
	}
	if b, err := hex.DecodeString(hash); err == nil && len(b) == len(t.Hash) {
		copy(t.Hash[:], b)
	}
	t.Expires, t.Created = fromNano(expires), fromNano(created)
	return t, nil
}

// DeleteToken deletes a token; ErrNotFound when there is none with id.
func (s *SQLite) DeleteToken(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM tokens WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// querier is what findToken and spendToken need of a *sql.DB or *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// findToken reads the token whose SHA-256 is hash and checks that it has a
// use left at now: ErrNotFound, ErrTokenExpired or ErrTokenUsedUp.
func findToken(ctx context.Context, q querier, hash [32]byte, now time.Time) (Token, error) {
	t, err := scanToken(q.QueryRowContext(ctx, `SELECT id, hash, group_name, max_uses, used, expires_at, created_at FROM tokens WHERE hash = ?`,
		hex.EncodeToString(hash[:])))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Token{}, ErrNotFound
	case err != nil:
		return Token{}, err
	case !t.Expires.IsZero() && !now.Before(t.Expires):
		return Token{}, ErrTokenExpired
	case t.MaxUses > 0 && t.Used >= t.MaxUses:
		return Token{}, ErrTokenUsedUp
	}
	return t, nil
}

// spendToken spends one use of the token whose SHA-256 is hash, in tx.
func spendToken(ctx context.Context, tx *sql.Tx, hash [32]byte, now time.Time) (Token, error) {
	t, err := findToken(ctx, tx, hash, now)
	if err != nil {
		return Token{}, err
	}
	res, err := tx.ExecContext(ctx, `UPDATE tokens SET used = used + 1 WHERE id = ? AND (max_uses = 0 OR used < max_uses)`, t.ID)
	if err != nil {
		return Token{}, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return Token{}, ErrTokenUsedUp
	}
	t.Used++
	return t, nil
}

// CheckToken returns the token whose SHA-256 is hash if it has a use left
// at now, without spending it. It fails with ErrNotFound, ErrTokenExpired
// or ErrTokenUsedUp.
func (s *SQLite) CheckToken(ctx context.Context, hash [32]byte, now time.Time) (Token, error) {
	t, err := findToken(ctx, s.db, hash, now)
	if err != nil && !isTokenErr(err) {
		err = fmt.Errorf("check token: %w", err)
	}
	return t, err
}

func isTokenErr(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrTokenExpired) || errors.Is(err, ErrTokenUsedUp)
}

// EnrollConnector spends one use of the token whose SHA-256 is hash and
// records the newly enrolled connector c in one transaction: both happen
// or neither, so a failure to record c leaves the token as it was. Of
// several callers racing for a token's last use exactly one succeeds; the
// others fail with ErrTokenUsedUp (or ErrNotFound, ErrTokenExpired).
func (s *SQLite) EnrollConnector(ctx context.Context, hash [32]byte, now time.Time, c Connector) (Token, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Token{}, fmt.Errorf("enroll connector: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	t, err := spendToken(ctx, tx, hash, now)
	if err != nil {
		if !isTokenErr(err) {
			err = fmt.Errorf("enroll connector: use token: %w", err)
		}
		return Token{}, err
	}
	if err := insertConnector(ctx, tx, c); err != nil {
		return Token{}, fmt.Errorf("enroll connector: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Token{}, fmt.Errorf("enroll connector: %w", err)
	}
	return t, nil
}

const connectorCols = `id, name, group_name, version, platform, enrolled_at, cert_serial, cert_expires, cert_in_use, cert_issued, revoked_at`

func scanConnector(r scanner) (Connector, error) {
	var c Connector
	var enrolled, expires, issued, revoked int64
	var inUse int
	if err := r.Scan(&c.ID, &c.Name, &c.Group, &c.Version, &c.Platform, &enrolled, &c.CertSerial, &expires, &inUse, &issued, &revoked); err != nil {
		return c, err
	}
	c.Enrolled, c.CertExpires, c.CertInUse, c.Revoked = fromNano(enrolled), fromNano(expires), inUse == 1, fromNano(revoked)
	c.CertIssued = fromNano(issued)
	return c, nil
}

// AddConnector records a newly enrolled connector.
func (s *SQLite) AddConnector(ctx context.Context, c Connector) error {
	if err := insertConnector(ctx, s.db, c); err != nil {
		return fmt.Errorf("add connector: %w", err)
	}
	return nil
}

func insertConnector(ctx context.Context, q querier, c Connector) error {
	_, err := q.ExecContext(ctx, `INSERT INTO connectors (`+connectorCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.Name, c.Group, c.Version, c.Platform, unixNano(c.Enrolled), c.CertSerial, unixNano(c.CertExpires),
		boolInt(c.CertInUse), unixNano(c.CertIssued), unixNano(c.Revoked))
	return err
}

// Connector returns one connector; ErrNotFound when there is none with id.
func (s *SQLite) Connector(ctx context.Context, id string) (Connector, error) {
	c, err := scanConnector(s.db.QueryRowContext(ctx, `SELECT `+connectorCols+` FROM connectors WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotFound
	}
	if err != nil {
		return c, fmt.Errorf("read connector: %w", err)
	}
	return c, nil
}

// Connectors lists the enrolled connectors, oldest first.
func (s *SQLite) Connectors(ctx context.Context) ([]Connector, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+connectorCols+` FROM connectors ORDER BY enrolled_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list connectors: %w", err)
	}
	defer rows.Close()
	var out []Connector
	for rows.Next() {
		c, err := scanConnector(rows)
		if err != nil {
			return nil, fmt.Errorf("list connectors: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// RenewConnector records a connector's new certificate (not in use yet)
// and returns the connector. CertIssued stays: the certificates issued
// before the one in use stay retired. A revoked connector is left as it is (check
// Revoked); ErrNotFound when there is no connector with id.
func (s *SQLite) RenewConnector(ctx context.Context, id, serial string, expires time.Time, version, platform string) (Connector, error) {
	_, err := s.db.ExecContext(ctx, `UPDATE connectors SET cert_serial = ?, cert_expires = ?, cert_in_use = 0, version = ?, platform = ? WHERE id = ? AND revoked_at = 0`,
		serial, unixNano(expires), version, platform, id)
	if err != nil {
		return Connector{}, fmt.Errorf("renew connector: %w", err)
	}
	return s.Connector(ctx, id)
}

// CertInUse records that connector id's agent presented the certificate
// serial, issued (NotBefore) at issued, which retires its older ones, and
// reports whether this call recorded it: false when it was recorded
// before, or when serial is not the newest (a renewal came in between).
func (s *SQLite) CertInUse(ctx context.Context, id, serial string, issued time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE connectors SET cert_in_use = 1, cert_issued = ? WHERE id = ? AND cert_serial = ? AND cert_in_use = 0`,
		unixNano(issued), id, serial)
	if err != nil {
		return false, fmt.Errorf("record certificate in use: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// AdoptCert records serial (issued at issued, expiring at expires) as
// connector id's newest certificate, in use, in place of prev: the agent
// presented a certificate newer than the one recorded, which happens when
// the store was restored from a backup taken before a renewal. It reports
// false, changing nothing, when the connector no longer records prev or
// was revoked.
func (s *SQLite) AdoptCert(ctx context.Context, id, prev, serial string, issued, expires time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE connectors SET cert_serial = ?, cert_expires = ?, cert_issued = ?, cert_in_use = 1
		WHERE id = ? AND cert_serial = ? AND revoked_at = 0`, serial, unixNano(expires), unixNano(issued), id, prev)
	if err != nil {
		return false, fmt.Errorf("adopt certificate: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// RevokeConnector marks a connector revoked at at. Revoking twice keeps the
// first time. ErrNotFound when there is no connector with id.
func (s *SQLite) RevokeConnector(ctx context.Context, id string, at time.Time) (Connector, error) {
	if _, err := s.db.ExecContext(ctx, `UPDATE connectors SET revoked_at = ? WHERE id = ? AND revoked_at = 0`, unixNano(at), id); err != nil {
		return Connector{}, fmt.Errorf("revoke connector: %w", err)
	}
	return s.Connector(ctx, id)
}

// AddSignOut records that the user session id was signed out; it is kept
// until expires, when the session would have ended. Entries past their
// end are deleted on the way.
func (s *SQLite) AddSignOut(ctx context.Context, id string, expires, now time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM signed_out WHERE expires <= ?`, unixNano(now)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO signed_out (id, expires) VALUES (?, ?)`, id, unixNano(expires)); err != nil {
		return err
	}
	return tx.Commit()
}

// SignOuts returns the signed-out sessions that have not ended by now:
// id → end.
func (s *SQLite) SignOuts(ctx context.Context, now time.Time) (map[string]time.Time, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, expires FROM signed_out WHERE expires > ?`, unixNano(now))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var id string
		var exp int64
		if err := rows.Scan(&id, &exp); err != nil {
			return nil, err
		}
		out[id] = time.Unix(0, exp).UTC()
	}
	return out, rows.Err()
}
