package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// FileName is the store's database file inside data_dir.
const FileName = "sallyport.db"

// sqliteDialect: every transaction is BEGIN IMMEDIATE (_txlock in the DSN),
// so write transactions are serial and need no lock of their own. Other
// processes on the same file wait for each other up to five seconds.
var sqliteDialect = dialect{name: "SQLite"}

// Open opens (creating if needed, mode 0600 in a 0700 directory) the SQLite
// store in dir and applies pending migrations.
func Open(ctx context.Context, dir string) (*DB, error) {
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
	return openSQLite(ctx, "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate")
}

// OpenMemory opens a store that lives only as long as the process (tests,
// and gateways started without a data directory).
func OpenMemory(ctx context.Context) (*DB, error) {
	return openSQLite(ctx, "file::memory:?_txlock=immediate")
}

func openSQLite(ctx context.Context, dsn string) (*DB, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// One connection: SQLite has one writer anyway, and an in-memory
	// database exists per connection.
	db.SetMaxOpenConns(1)
	s := &DB{db: db, d: sqliteDialect}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	return s, nil
}
