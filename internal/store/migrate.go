package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// migrations are applied in order; migrations[i] brings the schema to
// version i+1. Never edit one that has shipped: add a new one. Each runs
// unchanged on SQLite and PostgreSQL: TEXT, INTEGER and BIGINT columns
// (times as Unix nanoseconds, PEM as TEXT, so neither BLOB nor BYTEA),
// standard ALTER TABLE, no database's own functions.
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
	// 5: secrets that every gateway on the store must share (the session
	// cookie key, when the store is shared by replicas), by name.
	`CREATE TABLE secrets (
		name  TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);`,
	// 6: the gateway replicas alive on the store (a heartbeat each store
	// sweep), so that each can tell its agents how many there are.
	`CREATE TABLE replicas (
		id        TEXT PRIMARY KEY,
		last_seen BIGINT NOT NULL
	);`,
	// 7: how many connectors enrolled with each pre-provisioned token of
	// the gateway config (tunnel.tokens), by its SHA-256 like tokens.hash:
	// those tokens are not rows of tokens, and the token list showed them
	// as never used. Enrollments before this version are not counted.
	`CREATE TABLE config_token_uses (
		hash TEXT PRIMARY KEY,
		used INTEGER NOT NULL
	);`,
	// 8: renewals of users' sessions, so that the gateways on the store
	// renew each session once (a provider that rotates refresh tokens
	// refuses the second renewal) and any of them hands the renewed
	// session to a request that still carries the old cookie: id names
	// the renewal (a hash of the refresh token and the session's due
	// time, never the token), owner the gateway holding its lease,
	// result the renewed session sealed with the cookie key ('' while
	// leased), expires the end of the lease or of the result.
	`CREATE TABLE session_refreshes (
		id      TEXT PRIMARY KEY,
		owner   TEXT NOT NULL,
		result  TEXT NOT NULL,
		expires BIGINT NOT NULL
	);
	CREATE INDEX session_refreshes_expires ON session_refreshes (expires);`,
}

// SchemaVersion is the schema version this build writes.
var SchemaVersion = len(migrations)

// migrate brings the schema to SchemaVersion in one transaction. Replicas
// starting together on one PostgreSQL database take turns (the "migrate"
// lock): the first migrates, the others find the schema current.
func (s *DB) migrate(ctx context.Context) error {
	tx, err := s.begin(ctx, "migrate")
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
	if have == len(migrations) {
		return nil
	}
	for v := have; v < len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migration to schema version %d: %w", v+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = $1`, len(migrations)); err != nil {
		return err
	}
	return tx.Commit()
}
