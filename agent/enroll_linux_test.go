package agent

import (
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCheckDataDirFull: a data dir on a disk too full for the credentials
// is refused before the token is sent. Creating an empty file succeeds on
// a full disk, so the check used to pass, and the gateway spent the token
// on credentials the agent then could not save. A file size limit
// (RLIMIT_FSIZE) stands in for the full disk here: writes beyond it fail
// as they would with ENOSPC.
func TestCheckDataDirFull(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "agent")
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err) // Linux always has it
	}
	lim := old
	lim.Cur = 1024
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err) // lowering one's own soft limit is always allowed
	}
	err := checkDataDir(dir)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	var de *DataDirError
	if !errors.As(err, &de) || !errors.Is(err, syscall.EFBIG) || !strings.Contains(err.Error(), "still unused") {
		t.Fatalf("checkDataDir with room for 1 KiB: %v", err)
	}
	if err := checkDataDir(dir); err != nil {
		t.Fatalf("checkDataDir: %v", err)
	}
}

// TestDataDirErrorAfterEnrollment: when saving fails after the gateway
// enrolled the agent, the error says that the token's use is spent, and
// names the connector to revoke.
func TestDataDirErrorAfterEnrollment(t *testing.T) {
	msg := (&DataDirError{Dir: "/var/lib/sallyport", Err: syscall.ENOSPC, ConnectorID: "c0ffee"}).Error()
	for _, want := range []string{"enrolled connector c0ffee", "/var/lib/sallyport", "no space left on device", "spent",
		"sallyport token create", "sallyport connector revoke c0ffee"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%s\nwant %q in it", msg, want)
		}
	}
	if strings.Contains(msg, "still unused") {
		t.Errorf("%s\nthe token was used", msg)
	}
}
