package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// DB is the store: one implementation over database/sql for both
// databases, SQLite (Open, OpenMemory) and PostgreSQL (OpenPostgres). The
// statements are the same for both; the dialect holds what differs. It is
// safe for concurrent use, also by several processes on one database
// (replicas, or `sallyport gateway ca rotate` beside a running gateway).
type DB struct {
	db *sql.DB
	// ping is the connection Ping uses on PostgreSQL, outside db's pool:
	// calls that wait for a lock may hold every pooled connection, and a
	// ping that waited for one of them would report a database that
	// answers as down (/readyz 503 on every replica at once). nil on
	// SQLite (see Ping).
	ping  *sql.DB
	d     dialect
	calls callWatch // for Stalled
}

// dialect is what differs between the databases.
type dialect struct {
	// name is the database's name in errors ("SQLite", "PostgreSQL").
	name string
	// lock takes, at the start of a transaction, a lock held until it ends
	// that serialises the transactions taking the same key: what two
	// replicas must not do side by side (migrate, add a CA). Nil when
	// write transactions are serial anyway (SQLite's BEGIN IMMEDIATE).
	lock func(ctx context.Context, tx *sql.Tx, key string) error
}

// Shared reports whether other gateway processes may use this database at
// the same time: true on PostgreSQL (replicas), false on SQLite, which only
// one gateway process uses (its data_dir); replica rows on it that this
// process did not write are from earlier runs (a kill -9, a restored
// backup).
func (s *DB) Shared() bool { return s.d.name != sqliteDialect.name }

// Close closes the database.
func (s *DB) Close() error {
	if s.ping != nil {
		s.ping.Close()
	}
	return s.db.Close()
}

// Ping checks the database answers (readiness). It is not one of the
// calls Stalled follows; when it fails, Stalled reports nothing until a
// ping answers again, and then does not count the slow calls that no ping
// answered during after they had waited SlowCall (they waited for an
// outage, which Ping reports, not a stall).
func (s *DB) Ping(ctx context.Context) error {
	if !s.Shared() && s.db.Stats().InUse > 0 {
		// SQLite: its one connection is busy with a call of this process.
		// Ping's "SELECT 1" reads nothing from the file: waiting for the
		// connection would only time the call holding it, which may wait
		// for another process's write lock, a stall (Stalled), not an
		// outage that /readyz should report.
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	db := s.db
	if s.ping != nil {
		db = s.ping
	}
	st := db.Stats()
	pooled := st.MaxOpenConnections > 0 && st.InUse >= st.MaxOpenConnections
	err := db.PingContext(ctx)
	if err != nil && db.Stats().WaitCount > st.WaitCount {
		// It waited for a connection: on SQLite a call took the one
		// connection between the check above and the ping (then, as above,
		// nothing is known of the database: no failure); on PostgreSQL
		// another ping held the ping's own. Either way not an outage.
		if !s.Shared() {
			return nil
		}
		pooled = true
	}
	if err != nil && !pooled && !errors.Is(err, context.Canceled) {
		// The calls under way or ended before waited for a database
		// that does not answer: an outage, not a stall (see callWatch).
		// Not when every connection was in use: the ping may only have
		// waited for one, held by calls that wait for a lock.
		s.calls.down(time.Now())
	}
	if err == nil {
		s.calls.up()
	}
	return err
}

// CallTimeout bounds every call of the store: a database that does not
// answer (stopped, cut off by a firewall that drops packets, a lock held
// by someone else) fails the call after it instead of holding the caller,
// also one whose context has no deadline, such as an admin API request.
// A caller may give a shorter deadline of its own.
const CallTimeout = 10 * time.Second

// bound returns ctx limited to CallTimeout, for one call of the store; its
// cancel ends the call (Stalled follows the calls).
func (s *DB) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	end := s.calls.begin()
	return ctx, func() {
		end()
		cancel()
	}
}

// begin starts a transaction holding the lock for key (see dialect.lock);
// empty key: none.
func (s *DB) begin(ctx context.Context, key string) (*sql.Tx, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	if key != "" && s.d.lock != nil {
		if err := s.d.lock(ctx, tx, key); err != nil {
			tx.Rollback() //nolint:errcheck // the lock's error says more
			return nil, fmt.Errorf("lock %s: %w", key, err)
		}
	}
	return tx, nil
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
func (s *DB) CAs(ctx context.Context) ([]CA, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := queryAll(ctx, s.db, scanCA, `SELECT id, cert_pem, key_pem, active, created_at FROM cas ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("read connector CAs: %w", err)
	}
	return out, nil
}

func scanCA(r scanner) (CA, error) {
	var c CA
	var cert, key string
	var active int
	var created int64
	err := r.Scan(&c.ID, &cert, &key, &active, &created)
	c.CertPEM, c.KeyPEM, c.Active, c.Created = []byte(cert), []byte(key), active == 1, fromNano(created)
	return c, err
}

// AddCA adds ca to the trust bundle. When ca is active, every other CA
// becomes inactive in the same transaction. When onlyIfNone is set and a CA
// exists already, nothing is added and ok is false (two processes starting
// on an empty store create one CA, not two). Adding CAs is serialised
// across processes, so that two at once leave exactly one active.
func (s *DB) AddCA(ctx context.Context, ca CA, onlyIfNone bool) (ok bool, err error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	tx, err := s.begin(ctx, "cas")
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
	if _, err := tx.ExecContext(ctx, `INSERT INTO cas (id, cert_pem, key_pem, active, created_at) VALUES ($1, $2, $3, $4, $5)`,
		ca.ID, string(ca.CertPEM), string(ca.KeyPEM), boolInt(ca.Active), unixNano(ca.Created)); err != nil {
		return false, fmt.Errorf("add connector CA: %w", err)
	}
	return true, tx.Commit()
}

// RetireCAs removes every inactive CA from the trust bundle and returns how
// many it removed.
func (s *DB) RetireCAs(ctx context.Context) (int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	res, err := s.db.ExecContext(ctx, `DELETE FROM cas WHERE active = 0`)
	if err != nil {
		return 0, fmt.Errorf("retire connector CAs: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// CreateToken stores a new enrollment token.
func (s *DB) CreateToken(ctx context.Context, t Token) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.db.ExecContext(ctx, `INSERT INTO tokens (id, hash, group_name, max_uses, used, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		t.ID, hex.EncodeToString(t.Hash[:]), t.Group, t.MaxUses, t.Used, unixNano(t.Expires), unixNano(t.Created))
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	return nil
}

// Tokens lists the enrollment tokens, oldest first.
func (s *DB) Tokens(ctx context.Context) ([]Token, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := queryAll(ctx, s.db, scanToken,
		`SELECT id, hash, group_name, max_uses, used, expires_at, created_at FROM tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// queryAll runs query and scans each row it returns with scan, again on
// another connection when the pooled one was gone (readLost).
func queryAll[T any](ctx context.Context, db *sql.DB, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	return retryRead(ctx, func() ([]T, error) { return queryOnce(ctx, db, scan, query, args...) })
}

// retryRead runs read, and again, up to readAttempts in all, while it
// failed on a pooled connection that was gone (readLost): the pool dropped
// that connection, and a read changes nothing, so it is safe to repeat.
func retryRead[T any](ctx context.Context, read func() (T, error)) (T, error) {
	v, err := read()
	for i := 1; i < readAttempts && readLost(err) && ctx.Err() == nil; i++ {
		v, err = read()
	}
	return v, err
}

func queryOnce[T any](ctx context.Context, db *sql.DB, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
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
func (s *DB) DeleteToken(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	res, err := s.db.ExecContext(ctx, `DELETE FROM tokens WHERE id = $1`, id)
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
	t, err := scanToken(q.QueryRowContext(ctx, `SELECT id, hash, group_name, max_uses, used, expires_at, created_at FROM tokens WHERE hash = $1`,
		hex.EncodeToString(hash[:])))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Token{}, ErrNotFound
	case err != nil:
		return Token{}, err
	}
	if err := t.Check(now); err != nil {
		return Token{}, err
	}
	return t, nil
}

// spendToken spends one use of the token whose SHA-256 is hash, in tx.
func spendToken(ctx context.Context, tx *sql.Tx, hash [32]byte, now time.Time) (Token, error) {
	t, err := findToken(ctx, tx, hash, now)
	if err != nil {
		return Token{}, err
	}
	// The condition is checked again on the row as it is when the update
	// runs: of transactions racing for the last use (another replica's
	// too), the later ones wait for the first and then update nothing.
	err = tx.QueryRowContext(ctx, `UPDATE tokens SET used = used + 1 WHERE id = $1 AND (max_uses = 0 OR used < max_uses) RETURNING used`,
		t.ID).Scan(&t.Used)
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, ErrTokenUsedUp
	}
	return t, err
}

// CheckToken returns the token whose SHA-256 is hash if it has a use left
// at now, without spending it. It fails with ErrNotFound, ErrTokenExpired
// or ErrTokenUsedUp.
func (s *DB) CheckToken(ctx context.Context, hash [32]byte, now time.Time) (Token, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
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
func (s *DB) EnrollConnector(ctx context.Context, hash [32]byte, now time.Time, c Connector) (Token, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	tx, err := s.begin(ctx, "")
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

// EnrollConfigConnector records the newly enrolled connector c and counts
// one use of the gateway config's token whose SHA-256 is hash, in one
// transaction. Config tokens have no row in tokens and no limit: the count
// is only shown (ConfigTokenUses).
func (s *DB) EnrollConfigConnector(ctx context.Context, hash [32]byte, c Connector) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	tx, err := s.begin(ctx, "")
	if err != nil {
		return fmt.Errorf("enroll connector: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.ExecContext(ctx, `INSERT INTO config_token_uses (hash, used) VALUES ($1, 1)
		ON CONFLICT (hash) DO UPDATE SET used = config_token_uses.used + 1`, hex.EncodeToString(hash[:])); err != nil {
		return fmt.Errorf("enroll connector: count the config token's use: %w", err)
	}
	if err := insertConnector(ctx, tx, c); err != nil {
		return fmt.Errorf("enroll connector: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("enroll connector: %w", err)
	}
	return nil
}

// ConfigTokenUses returns how many connectors EnrollConfigConnector
// recorded for each config token, by its SHA-256; tokens never used are
// missing.
func (s *DB) ConfigTokenUses(ctx context.Context) (map[[32]byte]int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	type use struct {
		hash string
		used int
	}
	rows, err := queryAll(ctx, s.db, func(r scanner) (use, error) {
		var u use
		err := r.Scan(&u.hash, &u.used)
		return u, err
	}, `SELECT hash, used FROM config_token_uses`)
	if err != nil {
		return nil, fmt.Errorf("read config token uses: %w", err)
	}
	out := make(map[[32]byte]int, len(rows))
	for _, u := range rows {
		var h [32]byte
		if b, err := hex.DecodeString(u.hash); err == nil && len(b) == len(h) {
			copy(h[:], b)
			out[h] = u.used
		}
	}
	return out, nil
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
func (s *DB) AddConnector(ctx context.Context, c Connector) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := insertConnector(ctx, s.db, c); err != nil {
		return fmt.Errorf("add connector: %w", err)
	}
	return nil
}

func insertConnector(ctx context.Context, q querier, c Connector) error {
	_, err := q.ExecContext(ctx, `INSERT INTO connectors (`+connectorCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		c.ID, c.Name, c.Group, c.Version, c.Platform, unixNano(c.Enrolled), c.CertSerial, unixNano(c.CertExpires),
		boolInt(c.CertInUse), unixNano(c.CertIssued), unixNano(c.Revoked))
	return err
}

// Connector returns one connector; ErrNotFound when there is none with id.
func (s *DB) Connector(ctx context.Context, id string) (Connector, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	c, err := retryRead(ctx, func() (Connector, error) {
		return scanConnector(s.db.QueryRowContext(ctx, `SELECT `+connectorCols+` FROM connectors WHERE id = $1`, id))
	})
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotFound
	}
	if err != nil {
		return c, fmt.Errorf("read connector: %w", err)
	}
	return c, nil
}

// Connectors lists the enrolled connectors, oldest first.
func (s *DB) Connectors(ctx context.Context) ([]Connector, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := queryAll(ctx, s.db, scanConnector, `SELECT `+connectorCols+` FROM connectors ORDER BY enrolled_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list connectors: %w", err)
	}
	return out, nil
}

// NamedConnectors lists the connectors of group called name that are not
// revoked, oldest first: agents enrolled under one name, such as an agent
// installed again whose predecessor was never revoked.
func (s *DB) NamedConnectors(ctx context.Context, group, name string) ([]Connector, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := queryAll(ctx, s.db, scanConnector, `SELECT `+connectorCols+` FROM connectors
		WHERE group_name = $1 AND name = $2 AND revoked_at = 0 ORDER BY enrolled_at, id`, group, name)
	if err != nil {
		return nil, fmt.Errorf("list connectors named %q: %w", name, err)
	}
	return out, nil
}

// RenewConnector records a connector's new certificate (not in use yet)
// and returns the connector. CertIssued stays: the certificates issued
// before the one in use stay retired. A revoked connector is left as it is (check
// Revoked); ErrNotFound when there is no connector with id.
func (s *DB) RenewConnector(ctx context.Context, id, serial string, expires time.Time, version, platform string) (Connector, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.db.ExecContext(ctx, `UPDATE connectors SET cert_serial = $1, cert_expires = $2, cert_in_use = 0, version = $3, platform = $4 WHERE id = $5 AND revoked_at = 0`,
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
func (s *DB) CertInUse(ctx context.Context, id, serial string, issued time.Time) (bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	res, err := s.db.ExecContext(ctx, `UPDATE connectors SET cert_in_use = 1, cert_issued = $1 WHERE id = $2 AND cert_serial = $3 AND cert_in_use = 0`,
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
func (s *DB) AdoptCert(ctx context.Context, id, prev, serial string, issued, expires time.Time) (bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	res, err := s.db.ExecContext(ctx, `UPDATE connectors SET cert_serial = $1, cert_expires = $2, cert_issued = $3, cert_in_use = 1
		WHERE id = $4 AND cert_serial = $5 AND revoked_at = 0`, serial, unixNano(expires), unixNano(issued), id, prev)
	if err != nil {
		return false, fmt.Errorf("adopt certificate: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// RevokeConnector marks a connector revoked at at. Revoking twice keeps the
// first time. ErrNotFound when there is no connector with id.
func (s *DB) RevokeConnector(ctx context.Context, id string, at time.Time) (Connector, error) {
	c, _, err := s.RevokeConnectorFirst(ctx, id, at)
	return c, err
}

// RevokeConnectorFirst is RevokeConnector that also reports whether this
// call revoked the connector (first), rather than finding it revoked
// already. Of calls revoking one connector at the same time, through one
// gateway or several sharing the database, exactly one is first: the
// database decides, as it changes the row only while it is unrevoked.
func (s *DB) RevokeConnectorFirst(ctx context.Context, id string, at time.Time) (c Connector, first bool, err error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	// RETURNING: the first gets the row it revoked from the statement
	// that revoked it, with no second read that could fail after it.
	c, err = scanConnector(s.db.QueryRowContext(ctx, `UPDATE connectors SET revoked_at = $1 WHERE id = $2 AND revoked_at = 0 RETURNING `+connectorCols,
		unixNano(at), id))
	switch {
	case err == nil:
		return c, true, nil
	case !errors.Is(err, sql.ErrNoRows):
		return Connector{}, false, fmt.Errorf("revoke connector: %w", err)
	}
	c, err = s.Connector(ctx, id) // revoked before, or none (ErrNotFound)
	return c, false, err
}

// AddSignOut records that the user session id was signed out; it is kept
// until expires, when the session would have ended. Entries past their
// end are deleted on the way.
func (s *DB) AddSignOut(ctx context.Context, id string, expires, now time.Time) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	tx, err := s.begin(ctx, "")
	if err != nil {
		return fmt.Errorf("record sign-out: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.ExecContext(ctx, `DELETE FROM signed_out WHERE expires <= $1`, unixNano(now)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO signed_out (id, expires) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, id, unixNano(expires)); err != nil {
		return err
	}
	return tx.Commit()
}

// SignOuts returns the signed-out sessions that have not ended by now:
// id → end.
func (s *DB) SignOuts(ctx context.Context, now time.Time) (map[string]time.Time, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, `SELECT id, expires FROM signed_out WHERE expires > $1`, unixNano(now))
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

// Secret returns the secret stored under name. When there is none yet it
// stores the one create makes; of gateways doing this at once on one
// database, the first one's is kept and returned to all.
func (s *DB) Secret(ctx context.Context, name string, create func() (string, error)) (string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	read := func() (string, error) {
		var v string
		err := s.db.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = $1`, name).Scan(&v)
		return v, err
	}
	v, err := read()
	if !errors.Is(err, sql.ErrNoRows) {
		if err != nil {
			return "", fmt.Errorf("read secret %s: %w", name, err)
		}
		return v, nil
	}
	if v, err = create(); err != nil {
		return "", err
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, v); err != nil {
		return "", fmt.Errorf("store secret %s: %w", name, err)
	}
	if v, err = read(); err != nil {
		return "", fmt.Errorf("read secret %s: %w", name, err)
	}
	return v, nil
}

// Heartbeat records that the gateway replica id is alive at now, and
// deletes the replicas not seen since prune (stopped ones).
func (s *DB) Heartbeat(ctx context.Context, id string, now, prune time.Time) (err error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	defer func() { s.calls.heartbeat(err) }()
	tx, err := s.begin(ctx, "")
	if err != nil {
		return fmt.Errorf("replica heartbeat: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.ExecContext(ctx, `DELETE FROM replicas WHERE last_seen < $1`, unixNano(prune)); err != nil {
		return fmt.Errorf("replica heartbeat: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO replicas (id, last_seen) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen`, id, unixNano(now)); err != nil {
		return fmt.Errorf("replica heartbeat: %w", err)
	}
	return tx.Commit()
}

// RemoveReplica deletes the replica id (it stops), so that the others
// stop counting it at their next sweep.
func (s *DB) RemoveReplica(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM replicas WHERE id = $1`, id); err != nil {
		return fmt.Errorf("remove replica: %w", err)
	}
	return nil
}

// RemoveReplicasExcept deletes the replicas other than keep. A gateway on
// a store no other process shares (SQLite: see Shared) calls it with the
// replicas of its own process: the other rows are from earlier runs (a
// kill -9, a restored backup) and would be counted as replicas that do not
// exist.
func (s *DB) RemoveReplicasExcept(ctx context.Context, keep []string) (err error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	// Part of the first heartbeat (the gateway's is not tried when this
	// fails): a refusal here stalls the store as one of the heartbeat does.
	defer func() {
		if err != nil {
			s.calls.heartbeat(err)
		}
	}()
	q := `DELETE FROM replicas`
	args := make([]any, len(keep))
	for i, id := range keep {
		if i == 0 {
			q += ` WHERE id NOT IN (`
		} else {
			q += `, `
		}
		q += fmt.Sprintf("$%d", i+1)
		args[i] = id
	}
	if len(keep) > 0 {
		q += `)`
	}
	if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("remove replicas of earlier runs: %w", err)
	}
	return nil
}

// Replicas counts the gateway replicas seen at or after since.
func (s *DB) Replicas(ctx context.Context, since time.Time) (int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM replicas WHERE last_seen >= $1`, unixNano(since)).Scan(&n); err != nil {
		return 0, fmt.Errorf("count replicas: %w", err)
	}
	return n, nil
}

// ClaimRefresh is the start of a renewal of a user session, id naming it
// (see migration 8): when a result of it is kept past now, it returns the
// result and how long it is kept; otherwise it takes the lease for owner
// until lease, unless another owner holds an unexpired one, and reports
// whether owner holds it. Of gateways claiming one id at once, one gets
// the lease; the others see it held, and its result once recorded.
func (s *DB) ClaimRefresh(ctx context.Context, id, owner string, lease, now time.Time) (result string, kept time.Time, claimed bool, err error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	read := func() (string, string, int64, error) {
		var o, r string
		var exp int64
		err := s.db.QueryRowContext(ctx, `SELECT owner, result, expires FROM session_refreshes WHERE id = $1`, id).Scan(&o, &r, &exp)
		return o, r, exp, err
	}
	o, r, exp, err := read()
	switch {
	case err == nil && exp > unixNano(now) && r != "":
		return r, fromNano(exp), false, nil
	case err == nil && exp > unixNano(now):
		return "", time.Time{}, o == owner, nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return "", time.Time{}, false, fmt.Errorf("claim session renewal: %w", err)
	}
	// None, or ended: take it unless another gateway did meanwhile.
	if _, err := s.db.ExecContext(ctx, `INSERT INTO session_refreshes (id, owner, result, expires) VALUES ($1, $2, '', $3)
		ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, result = '', expires = excluded.expires
		WHERE session_refreshes.expires <= $4`, id, owner, unixNano(lease), unixNano(now)); err != nil {
		return "", time.Time{}, false, fmt.Errorf("claim session renewal: %w", err)
	}
	if o, r, exp, err = read(); err != nil {
		return "", time.Time{}, false, fmt.Errorf("claim session renewal: %w", err)
	}
	if r != "" {
		return r, fromNano(exp), false, nil
	}
	return "", time.Time{}, o == owner, nil
}

// FinishRefresh ends owner's lease on the renewal id: it keeps result
// until keep, or with an empty result (the renewal failed) lets the next
// claim have the lease at once. A lease that another owner took over (it
// had ended) is left to that owner. Renewals that ended by now are
// deleted on the way.
func (s *DB) FinishRefresh(ctx context.Context, id, owner, result string, keep, now time.Time) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	tx, err := s.begin(ctx, "")
	if err != nil {
		return fmt.Errorf("record session renewal: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.ExecContext(ctx, `DELETE FROM session_refreshes WHERE expires <= $1`, unixNano(now)); err != nil {
		return fmt.Errorf("record session renewal: %w", err)
	}
	if result == "" {
		_, err = tx.ExecContext(ctx, `DELETE FROM session_refreshes WHERE id = $1 AND owner = $2 AND result = ''`, id, owner)
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE session_refreshes SET result = $1, expires = $2 WHERE id = $3 AND owner = $4 AND result = ''`,
			result, unixNano(keep), id, owner)
	}
	if err != nil {
		return fmt.Errorf("record session renewal: %w", err)
	}
	return tx.Commit()
}

// KeepRefresh keeps the result of the renewal id no later than until.
func (s *DB) KeepRefresh(ctx context.Context, id string, until time.Time) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if _, err := s.db.ExecContext(ctx, `UPDATE session_refreshes SET expires = $1 WHERE id = $2 AND result <> '' AND expires > $1`,
		unixNano(until), id); err != nil {
		return fmt.Errorf("shorten session renewal: %w", err)
	}
	return nil
}

// DropRefresh deletes the result of the renewal id and returns it (""
// when there is none).
func (s *DB) DropRefresh(ctx context.Context, id string) (string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var r string
	err := s.db.QueryRowContext(ctx, `DELETE FROM session_refreshes WHERE id = $1 AND result <> '' RETURNING result`, id).Scan(&r)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("delete session renewal: %w", err)
	}
	return r, nil
}
