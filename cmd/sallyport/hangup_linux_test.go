//go:build !agentonly

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testrig"
)

// TestBinaryHangupDuringStartup: a SIGHUP that reaches the gateway while it
// starts neither kills it nor gets lost: once the gateway is up it reloads
// its apps. To catch the gateway in its start-up, its config file is a FIFO:
// the test's open for writing returns only once the gateway opened the
// file to read it, and the gateway goes on only once the test has written
// it; the SIGHUP goes in between, and the test waits until the kernel no
// longer holds it pending (it was delivered) before it lets the gateway
// go on. Without the fix the SIGHUP's default action terminates the
// gateway there.
func TestBinaryHangupDuringStartup(t *testing.T) {
	testrig.SkipShort(t, "builds and runs the binary")
	dir := t.TempDir()
	fifo := filepath.Join(dir, "gateway.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf("public:\n  addr: \"127.0.0.1:0\"\ntunnel:\n  addr: \"127.0.0.1:0\"\n"+
		"admin:\n  addr: \"127.0.0.1:0\"\ndata_dir: %s\nshutdown_grace: 1s\n", filepath.Join(dir, "gw"))
	gw := startProc(t, "gateway", "--config", fifo)
	// feed writes the config into the FIFO once the gateway opened it, and
	// calls between (if not nil) before it writes.
	feed := func(between func()) {
		t.Helper()
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if between != nil {
			between()
		}
		if _, err := f.WriteString(config); err != nil {
			t.Fatalf("write the config: %v\n%s", err, gw.output())
		}
	}
	feed(func() {
		if err := gw.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitDelivered(t, gw.cmd.Process.Pid, syscall.SIGHUP)
	})
	gw.waitLog("gateway listening")
	gw.waitLog("reloading the apps")
	feed(nil) // the reload reads the file again
	gw.waitLog("apps reloaded")
	if code := gw.stop(); code != 0 {
		t.Fatalf("gateway exit code after SIGTERM = %d\n%s", code, gw.output())
	}
}

// waitDelivered waits until sig is no longer pending for process pid
// (ShdPnd and SigPnd in /proc/PID/status): the process has handled it, or
// died of it.
func waitDelivered(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	bit := uint64(1) << (uint(sig) - 1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			return // gone
		}
		pending := uint64(0)
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "ShdPnd" || k == "SigPnd") {
				n, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				pending |= n
			}
		}
		if pending&bit == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("signal %v still pending for process %d after 10s", sig, pid)
		}
		time.Sleep(time.Millisecond) // polling the kernel's view; nothing to wait on
	}
}
