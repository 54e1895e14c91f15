package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"github.com/sallyport/sallyport/internal/testrig"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// builtDir is the temporary folder of the built binary; TestMain removes it.
var builtDir string

// buildBinary compiles the sallyport command once for the binary tests.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "sallyport-bin-")
	if err != nil {
		return "", err
	}
	builtDir = dir
	bin := filepath.Join(dir, "sallyport")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as `make build`: static
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// proc is a running sallyport process whose JSON log lines are collected.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []map[string]any
	raw   strings.Builder
	seen  chan struct{} // signalled after every line
	done  chan struct{} // closed when stderr is drained
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append(args, "--log-format", "json", "--log-level", "debug")...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, seen: make(chan struct{}, 1), done: make(chan struct{})}
	go p.read(stderr)
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
			cmd.Wait()
		}
	})
	return p
}

func (p *proc) read(r io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		_ = json.Unmarshal(sc.Bytes(), &m)
		p.mu.Lock()
		p.raw.WriteString(sc.Text() + "\n")
		if m != nil {
			p.lines = append(p.lines, m)
		}
		p.mu.Unlock()
		select {
		case p.seen <- struct{}{}:
		default:
		}
	}
}

// waitLog waits for a log line whose msg contains msg and returns it.
func (p *proc) waitLog(msg string) map[string]any {
	p.t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	next := 0
	for {
		if l := p.scan(&next, msg); l != nil {
			return l
		}
		select {
		case <-p.seen:
		case <-p.done:
			if l := p.scan(&next, msg); l != nil {
				return l
			}
			p.t.Fatalf("process exited without logging %q:\n%s", msg, p.output())
		case <-deadline.C:
			p.t.Fatalf("no log line %q within 20s:\n%s", msg, p.output())
		}
	}
}

// scan looks for msg in the lines from *next on and advances *next.
func (p *proc) scan(next *int, msg string) map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ; *next < len(p.lines); *next++ {
		if s, _ := p.lines[*next]["msg"].(string); strings.Contains(s, msg) {
			return p.lines[*next]
		}
	}
	return nil
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.raw.String()
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop() int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	<-p.done
	p.cmd.Wait()
	return p.cmd.ProcessState.ExitCode()
}

// wait waits for the process to exit by itself and returns the exit code.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Fatalf("process still running after 20s:\n%s", p.output())
	}
	p.cmd.Wait()
	return p.cmd.ProcessState.ExitCode()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBinaryGatewayAndAgent runs the real binary as a user would: a gateway
// and an agent from YAML files, a request relayed, a refused token, and a
// graceful stop of both on SIGTERM.
func TestBinaryGatewayAndAgent(t *testing.T) {
	testrig.SkipShort(t, "builds and runs the binary")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "private app says hi to "+r.Header.Get("X-Forwarded-Host"))
	}))
	defer backend.Close()
	dir := t.TempDir()
	const token = "tok-3f9c1d7e-never-log-me"
	gwYAML := filepath.Join(dir, "gateway.yaml")
	writeFile(t, gwYAML, fmt.Sprintf(`public:
  addr: "127.0.0.1:0"
tunnel:
  addr: "127.0.0.1:0"
  tokens:
    - {token: %q, group: default}
admin:
  addr: "127.0.0.1:0"
data_dir: %s
shutdown_grace: 5s
apps:
  - name: hello
    hosts: ["hello.test"]
    backend: %s
    group: default
`, token, filepath.Join(dir, "gw"), backend.URL))
	gw := startProc(t, "gateway", "--config", gwYAML)
	listening := gw.waitLog("gateway listening")
	public, _ := listening["public"].(string)
	tunnelAddr, _ := listening["tunnel"].(string)
	if public == "" || tunnelAddr == "" {
		t.Fatalf("listening line without addresses: %v", listening)
	}
	adminAddr, _ := listening["admin"].(string)
	if res, err := http.Get("http://" + adminAddr + "/healthz"); err != nil || res.StatusCode != 200 {
		t.Fatalf("admin /healthz: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	if fp, _ := gw.waitLog("tunnel certificate")["fingerprint"].(string); !strings.HasPrefix(fp, "sha256:") {
		t.Fatalf("fingerprint not logged: %q", fp)
	}

	agentYAML := func(name, tok string) string {
		p := filepath.Join(dir, name+".yaml")
		writeFile(t, p, fmt.Sprintf(`gateway: %s
gateway_ca_file: %s
token: %q
data_dir: %s
name: %s
connections: 2
allow: [%q]
`, tunnelAddr, filepath.Join(dir, "gw", "tunnel-cert.pem"), tok, filepath.Join(dir, name), name, strings.TrimPrefix(backend.URL, "http://")))
		return p
	}
	ag := startProc(t, "agent", "--config", agentYAML("agent-1", token))
	ag.waitLog("connected to the gateway")

	get := func() (int, string) {
		req, _ := http.NewRequest("GET", "http://"+public+"/", nil)
		req.Host = "hello.test"
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get(); code != 200 || body != "private app says hi to hello.test" {
		t.Fatalf("relayed GET = %d %q", code, body)
	}

	// An agent with a wrong token cannot enroll: it says so and exits.
	bad := startProc(t, "agent", "--config", agentYAML("agent-bad", "wrong-token"))
	gw.waitLog("enrollment refused")
	if code := bad.wait(); code != 1 || !strings.Contains(bad.output(), "enrollment token unknown") {
		t.Fatalf("refused agent exit code %d\n%s", code, bad.output())
	}

	if code := ag.stop(); code != 0 {
		t.Fatalf("agent exit code after SIGTERM = %d\n%s", code, ag.output())
	}
	ag.waitLog("agent stopped")
	gw.waitLog("agent session ended")
	http.DefaultClient.CloseIdleConnections()
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "connector") {
		t.Fatalf("GET without agents = %d %q, want 503 no-connector", code, body)
	}
	http.DefaultClient.CloseIdleConnections()
	if code := gw.stop(); code != 0 {
		t.Fatalf("gateway exit code after SIGTERM = %d\n%s", code, gw.output())
	}
	gw.waitLog("gateway stopped")
	for _, p := range []*proc{gw, ag, bad} {
		if strings.Contains(p.output(), token) {
			t.Fatalf("a token appears in the logs:\n%s", p.output())
		}
	}
}

// TestBinaryConfigError checks that a wrong config stops start-up with the
// file, line and key named, and a non-zero exit code.
func TestBinaryConfigError(t *testing.T) {
	testrig.SkipShort(t, "builds and runs the binary")
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeFile(t, path, "public:\n  addr: \":0\"\n  bogus: 1\n")
	out, err := exec.Command(bin, "gateway", "--config", path).CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() == 0 {
		t.Fatalf("gateway with a bad config: err %v, output %s", err, out)
	}
	if want := "gateway.yaml:3: unknown key \"bogus\""; !strings.Contains(string(out), want) {
		t.Fatalf("output %q does not contain %q", out, want)
	}
}
