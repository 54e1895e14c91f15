package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// postgresDialect: READ COMMITTED (PostgreSQL's default) is enough for the
// single-statement conditional updates (a token's use, a certificate in
// use or adopted, a renewal, a revocation): an UPDATE that waited for
// another transaction's row checks its WHERE again on the row as that
// transaction left it. What reads first and writes after (migrate, AddCA)
// takes a transaction-level advisory lock, per schema, so two replicas on
// one database take turns.
var postgresDialect = dialect{name: "PostgreSQL", lock: pgLock}

func pgLock(ctx context.Context, tx *sql.Tx, key string) error {
	_, err := tx.ExecContext(ctx,
		`SELECT pg_advisory_xact_lock(hashtext('sallyport.' || $1 || '.' || coalesce(current_schema(), '')))`, key)
	return err
}

// PostgresConnectTimeout bounds reaching the database at OpenPostgres
// when the caller's context has no deadline of its own.
const PostgresConnectTimeout = 15 * time.Second

// OpenPostgres opens the store in the PostgreSQL database that dsn names
// (a URL, postgres://user@host:5432/db?sslmode=verify-full, or key=value
// pairs) and applies pending migrations. What the DSN leaves out comes from
// the PG* environment variables and the password file, as with psql:
// PGPASSWORD or ~/.pgpass (PGPASSFILE) for the password. The tables live
// in the first schema of the search path (a search_path parameter in the
// DSN picks another). Several gateways may use one database at once.
func OpenPostgres(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message shows the DSN with its password masked.
		return nil, fmt.Errorf("open store: PostgreSQL DSN: %w; write it as postgres://USER@HOST:PORT/DATABASE?sslmode=... "+
			"or as host=HOST port=PORT dbname=DATABASE user=USER", err)
	}
	cfg.ConnectTimeout = connectTimeout(cfg)
	// A pooled connection is checked with a round trip before every use,
	// not only after a second idle (pgx's default): a server that
	// restarted, failed over or had its connections terminated
	// (pg_terminate_backend, an idle-session timeout, a proxy) leaves
	// the pool's connections dead, and the first call on each would fail
	// with the server's goodbye instead of opening a new one. The store's
	// calls are few; the round trip costs little.
	db := stdlib.OpenDB(*cfg, stdlib.OptionShouldPing(func(_ context.Context, p stdlib.ShouldPingParams) bool {
		return p.IdleDuration > pingAfterIdle
	}))
	// A gateway's store calls are few (session starts, enrollments, the
	// sweep); a small pool keeps a replica's share of max_connections low.
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(maxIdleConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	// Ping's own connection (see DB.ping): one, kept while idle.
	ping := stdlib.OpenDB(*cfg)
	ping.SetMaxOpenConns(1)
	ping.SetMaxIdleConns(1)
	ping.SetConnMaxIdleTime(5 * time.Minute)
	s := &DB{db: db, ping: ping, d: postgresDialect}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, PostgresConnectTimeout)
		defer cancel()
	}
	if err := db.PingContext(ctx); err != nil {
		s.Close()
		return nil, unreachable(cfg, err)
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store: PostgreSQL %s: %w%s", where(cfg), err, schemaHint(cfg, err))
	}
	return s, nil
}

// where names the server and database of cfg, without the password.
func where(cfg *pgx.ConnConfig) string {
	hp := cfg.Host
	if !strings.HasPrefix(hp, "/") {
		hp = net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	}
	return fmt.Sprintf("%s database %q user %q", hp, cfg.Database, cfg.User)
}

// schemaHint explains a migration that could not create its tables in
// the first schema of the search path: it does not exist (SQLSTATE 3F000,
// "no schema has been selected to create in"; PostgreSQL skips missing
// schemas of search_path) or the user may not create in it (42501). Other
// errors get no hint ("").
func schemaHint(cfg *pgx.ConnConfig, err error) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || (pgErr.Code != "3F000" && pgErr.Code != "42501") {
		return ""
	}
	path, name := "the server's default for this user (SHOW search_path)", "NAME"
	if sp := cfg.RuntimeParams["search_path"]; sp != "" {
		path = fmt.Sprintf("%q, from the DSN", sp)
		first, _, _ := strings.Cut(sp, ",")
		if first = strings.Trim(strings.TrimSpace(first), `"`); first != "" {
			name = first
		}
	}
	return fmt.Sprintf("; the schema named by search_path (%s) does not exist, or user %q cannot create tables in it: "+
		"create it (CREATE SCHEMA %s AUTHORIZATION %s), or fix search_path in the DSN", path, cfg.User, name, cfg.User)
}

// unreachable explains a failed first connection and what to check.
func unreachable(cfg *pgx.ConnConfig, err error) error {
	hint := "check that the server runs and accepts connections from this host (listen_addresses, pg_hba.conf, firewalls) " +
		"and that the DSN names the right host, port and database"
	if errors.Is(err, context.DeadlineExceeded) {
		hint = "no answer in time: " + hint
	}
	switch msg := err.Error(); {
	case strings.Contains(msg, "server refused TLS connection"):
		// pgx's words when the DSN's sslmode requires TLS (require,
		// verify-ca, verify-full) and the server answers that it has none.
		hint = "the server does not offer TLS, and the DSN's sslmode requires it: enable ssl on the server " +
			"(ssl = on and a certificate in postgresql.conf), or set sslmode in the DSN (sslmode=disable only " +
			"where the network to the database is trusted)"
	case strings.Contains(msg, "tls error"):
		hint = "the TLS connection to the server failed: check sslmode in the DSN, sslrootcert (the CA that signed " +
			"the server's certificate) and, with sslmode=verify-full, that the DSN's host is a name in that certificate"
	}
	if s := err.Error(); strings.Contains(s, "password") || strings.Contains(s, "SASL") || strings.Contains(s, "28P01") {
		hint = "check the user and password: PGPASSWORD, the password file (~/.pgpass or PGPASSFILE), " +
			"or the DSN given by store.postgres_file or store.postgres_env"
	}
	return fmt.Errorf("open store: cannot use PostgreSQL at %s: %w; %s", where(cfg), err, hint)
}

// pingAfterIdle: a pooled connection idle for longer is checked with a
// round trip before use. One used more recently (a burst of session
// starts) is not: a read on it that meets the server's goodbye, or a
// connection closed without one, is repeated (readLost).
const pingAfterIdle = 100 * time.Millisecond

// serverEnded reports that the server had ended the connection before the
// call reached it (pg_terminate_backend, a shutdown, an idle-session
// timeout): nothing of the call ran.
func serverEnded(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P05")
}

// readLost reports that a read failed because its pooled connection was
// gone: the server had ended it (serverEnded), or it was closed without a
// word (a server or proxy that restarted, a reset, a network that came
// back): the pool drops the connection, and the read, which changes
// nothing, may be repeated on another. Without it, each connection of the
// pool that had been used within pingAfterIdle failed one call after a
// database outage (a flaky TestReplicaOutlivesDatabaseOutage: the admin
// API's connector list answered 503 after the database was back).
func readLost(err error) bool {
	return serverEnded(err) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// maxIdleConns is how many connections the store's pool keeps while idle.
const maxIdleConns = 2

// readAttempts bounds the tries of a read that meets lost connections:
// one per idle connection the pool keeps, each of which may be gone, and
// one more on a new connection.
const readAttempts = maxIdleConns + 1

// connectTimeout is how long a new connection to one host of cfg may
// take: CallTimeout shared by the hosts of a failover DSN (host=a,b, which
// pgx tries one after another, each with its own ConnectTimeout), so that a
// host that drops packets leaves the next one time within the call; a
// shorter connect_timeout in the DSN stands. Without one, a server behind a
// firewall that drops packets would hold each new connection for the
// operating system's SYN retries (about two minutes).
func connectTimeout(cfg *pgx.ConnConfig) time.Duration {
	hosts := map[string]bool{net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))): true}
	for _, f := range cfg.Fallbacks {
		hosts[net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port)))] = true
	}
	perHost := CallTimeout / time.Duration(len(hosts))
	if cfg.ConnectTimeout <= 0 || cfg.ConnectTimeout > perHost {
		return perHost
	}
	return cfg.ConnectTimeout
}
