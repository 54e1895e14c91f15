package store

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestConnectTimeoutSharedByHosts: the hosts of a failover DSN share the
// 10 s a store call may take, so that a first host that drops packets
// leaves the second one time (before, each got the whole 10 s: the call
// ended before the second host was tried, review15); a shorter
// connect_timeout in the DSN stands, a longer one is cut.
func TestConnectTimeoutSharedByHosts(t *testing.T) {
	for _, c := range []struct {
		dsn  string
		want time.Duration
	}{
		{"host=pg1 port=5432 user=u dbname=d", CallTimeout},
		{"host=pg1,pg2 port=5432 user=u dbname=d", CallTimeout / 2},
		{"host=pg1,pg2,pg3 port=5432 user=u dbname=d", CallTimeout / 3},
		{"host=pg1,pg1 port=5432 user=u dbname=d", CallTimeout}, // one host named twice
		{"host=pg1,pg2 port=5432 user=u dbname=d connect_timeout=3", 3 * time.Second},
		{"host=pg1 port=5432 user=u dbname=d connect_timeout=60", CallTimeout},
	} {
		cfg, err := pgx.ParseConfig(c.dsn)
		if err != nil {
			t.Fatal(err)
		}
		if got := connectTimeout(cfg); got != c.want {
			t.Errorf("%s: connect timeout %v, want %v", c.dsn, got, c.want)
		}
	}
}

// sqliteCodeErr is an error with a SQLite result code, as the driver's.
type sqliteCodeErr int

func (e sqliteCodeErr) Error() string { return fmt.Sprintf("sqlite error %d", int(e)) }
func (e sqliteCodeErr) Code() int     { return int(e) }

// TestUnavailableSQLiteBusy: a SQLite store whose file another process
// holds locked past busy_timeout (a backup, the sqlite3 CLI) did not
// answer, and may when asked again: SQLITE_BUSY and SQLITE_LOCKED, with
// their extended codes, are Unavailable (the admin API answered 500 and
// agents got the driver's text, review15); other SQLite errors are not.
func TestUnavailableSQLiteBusy(t *testing.T) {
	for code, want := range map[int]bool{5: true, 5 | 2<<8: true, 6: true, 6 | 1<<8: true, 19: false, 1: false} {
		err := fmt.Errorf("list tokens: %w", sqliteCodeErr(code))
		if got := Unavailable(err); got != want {
			t.Errorf("SQLite code %d: Unavailable %v, want %v", code, got, want)
		}
	}
	if Unavailable(errors.New("no such table")) {
		t.Error("a plain error is Unavailable")
	}
}
