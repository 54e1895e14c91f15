//go:build !agentonly

package main

import (
	"context"
	"fmt"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/store"
)

// openStore opens the gateway's store as cfg says: the PostgreSQL
// database of the store section, or SQLite in data_dir. Every command that
// works on the store opens it here, so they all agree.
func openStore(ctx context.Context, cfg *config.Gateway) (*store.DB, error) {
	key := cfg.Store.PostgresKey()
	if key == "" {
		st, err := store.Open(ctx, cfg.DataDirOrDefault())
		if err != nil {
			return nil, fmt.Errorf("data_dir: %w", err)
		}
		return st, nil
	}
	dsn, err := postgresDSN(&cfg.Store)
	if err != nil {
		return nil, cfg.FileError(key, err)
	}
	st, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		return nil, cfg.SettingError(key, err)
	}
	return st, nil
}

// postgresDSN reads the DSN from where the store section says.
func postgresDSN(s *config.Store) (string, error) {
	if s.Postgres != "" {
		return s.Postgres, nil
	}
	return readSecret(s.PostgresFile, s.PostgresEnv)
}
