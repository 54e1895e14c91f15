//go:build !agentonly

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/shortskip"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemo runs `sallyport demo` in process and uses it as a newcomer
// would: the page, /echo, /bytes and /stream, all through the relay. Its
// stop logs no error (it logged "connector group has no agents" at ERROR:
// the demo's agent stops before its gateway).
func TestDemo(t *testing.T) {
	core, logs := observer.New(zapcore.ErrorLevel)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	urls := make(chan string, 1)
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, "127.0.0.1:0", zap.New(core), out, func(u string) { urls <- u })
	}()
	var base string
	select {
	case base = <-urls:
	case err := <-done:
		t.Fatalf("demo ended early: %v\n%s", err, out)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		res, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, b
	}

	if res, b := get("/"); res.StatusCode != 200 || !strings.Contains(string(b), demoapp.Title) {
		t.Fatalf("GET / = %d, page without the demo title:\n%.300s", res.StatusCode, b)
	}
	res, b := get("/echo?x=1")
	var echo demoapp.Echo
	if err := json.Unmarshal(b, &echo); err != nil || res.StatusCode != 200 {
		t.Fatalf("GET /echo = %d %q: %v", res.StatusCode, b, err)
	}
	if echo.Query != "x=1" || len(echo.Headers["X-Forwarded-For"]) == 0 || len(echo.Headers["X-Request-Id"]) == 0 {
		t.Fatalf("echo shows the request was not relayed as expected: %+v", echo)
	}
	_, b = get("/bytes/100000")
	want := demoapp.BytesSHA256(100000)
	if got := sha256.Sum256(b); got != want {
		t.Fatalf("/bytes/100000 digest %s, want %s", hex.EncodeToString(got[:]), hex.EncodeToString(want[:]))
	}
	if res, b := get("/stream?n=3&interval=1ms"); res.Header.Get("Content-Type") != "text/event-stream" ||
		strings.Count(string(b), "data: ") != 3 {
		t.Fatalf("/stream: %v %q", res.Header, b)
	}
	if !strings.Contains(out.String(), base+"/") || !strings.Contains(out.String(), "curl") ||
		!strings.Contains(out.String(), "enrolled") {
		t.Fatalf("the demo did not print what to open and curl:\n%s", out)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("demo: %v", err)
	}
	for _, e := range logs.All() {
		t.Errorf("the demo logged at %s: %s %v", e.Level, e.Message, e.ContextMap())
	}
}

// TestDemoAddrWithoutPort: `sallyport demo --addr 127.0.0.1` said
// "public.addr: must be host:port", a setting the user never wrote.
func TestDemoAddrWithoutPort(t *testing.T) {
	for _, addr := range []string{"127.0.0.1", "127.0.0.1:http"} {
		err := runDemo(context.Background(), addr, zap.NewNop(), io.Discard, nil)
		if err == nil || !strings.HasPrefix(err.Error(), "--addr: ") || strings.Contains(err.Error(), "public.addr") {
			t.Errorf("--addr %s: %v", addr, err)
		}
	}
}

// TestDemoClosedStdoutRemovesTempDir: `sallyport demo | grep -m3 …` was
// killed by SIGPIPE when it printed "stopping the demo" to the pipe grep
// had closed, and left /tmp/sallyport-demo-* with the demo's CA key. The
// demo runs in a child process (this test binary) whose stdout is closed
// before it is stopped.
func TestDemoClosedStdoutRemovesTempDir(t *testing.T) {
	if runtime.GOOS == "windows" {
		shortskip.Unsupported(t, "no SIGPIPE, and no SIGINT to send to a child")
	}
	tmp := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDemoChildProcess$")
	cmd.Env = append(os.Environ(), demoChildEnv+"=1", "TMPDIR="+tmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	banner := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Press Ctrl-C to stop.") {
			banner = true
			break
		}
	}
	if !banner {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the demo printed no banner: %v\n%s", sc.Err(), stderr.String())
	}
	// As grep -m3 does: the reader goes away, then Ctrl-C.
	stdout.Close()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Errorf("the demo was killed by %v", ws.Signal())
		}
	}
	left, _ := filepath.Glob(filepath.Join(tmp, "sallyport-demo-*"))
	if len(left) > 0 {
		t.Errorf("the demo left %q behind (exit: %v)\n%s", left, err, stderr.String())
	}
}

// demoChildEnv makes TestDemoChildProcess run `sallyport demo`.
const demoChildEnv = "SALLYPORT_TEST_DEMO_CHILD"

// TestDemoChildProcess is the demo of TestDemoClosedStdoutRemovesTempDir;
// without demoChildEnv it does nothing.
func TestDemoChildProcess(t *testing.T) {
	if os.Getenv(demoChildEnv) == "" {
		return
	}
	root := newRootCmd()
	root.SetArgs([]string{"demo", "--addr", "127.0.0.1:0"})
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestDemoURLOnEveryAddress: with --addr :PORT the demo prints a URL that
// names an app host (it printed http://[::]:PORT/, which answered 404
// no-route), and with --addr HOST:PORT the app answers on HOST too.
func TestDemoURLOnEveryAddress(t *testing.T) {
	for _, ip := range []net.IP{net.IPv6unspecified, net.IPv4zero} {
		if got := demoURL(&net.TCPAddr{IP: ip, Port: 8080}); got != "http://127.0.0.1:8080" {
			t.Errorf("demoURL(%s:8080) = %q, want http://127.0.0.1:8080", ip, got)
		}
	}
	if got := demoURL(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 8080}); got != "http://192.0.2.7:8080" {
		t.Errorf("demoURL(192.0.2.7:8080) = %q", got)
	}
	if h := demoHosts("192.0.2.7:8080"); !slices.Contains(h, "192.0.2.7") {
		t.Errorf("demoHosts(192.0.2.7:8080) = %q: the printed URL would answer 404 no-route", h)
	}
	if h := demoHosts(":8080"); len(h) != 2 {
		t.Errorf("demoHosts(:8080) = %q, want only loopback", h)
	}
}
