package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteSyncsDirectory: Write and Rename sync the directory after the
// rename, so the new file is on disk when they return; the file's data
// alone was synced before, and a power loss soon after a renewal could
// bring back the agent's retired key and certificate.
func TestWriteSyncsDirectory(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent-key.pem")
	var synced []string
	old := syncDir
	t.Cleanup(func() { syncDir = old })
	syncDir = func(d string) {
		// Only after the rename: the file under its name is the new one.
		if b, err := os.ReadFile(p); err != nil || string(b) != "new" {
			t.Errorf("directory synced before the rename: %q, %v", b, err)
		}
		synced = append(synced, d)
		old(d)
	}
	if err := Write(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 || synced[0] != dir {
		t.Fatalf("Write synced directories %q, want [%q]", synced, dir)
	}
	next := filepath.Join(dir, "agent-cert.pem.next")
	if err := os.WriteFile(next, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	p = filepath.Join(dir, "agent-cert.pem")
	if err := Rename(next, p); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 2 || synced[1] != dir {
		t.Fatalf("Rename synced directories %q, want a second %q", synced, dir)
	}
	if err := Rename(next, p); err == nil {
		t.Fatal("Rename of a missing file succeeded")
	}
	if len(synced) != 2 {
		t.Fatalf("a failed Rename synced %q", synced[2:])
	}
}
