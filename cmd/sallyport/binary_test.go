package main

import (
	"bufio"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/makevars"
	"github.com/sallyport/sallyport/internal/testrig"
)

// builtDir is the temporary folder of the built binaries; TestMain removes
// it.
var (
	builtDir    string
	builtDirErr error
	builtOnce   sync.Once
)

// goBuild compiles the sallyport command into builtDir as name, static as
// `make build` builds it, with the build tags given.
func goBuild(name, tags string) (string, error) {
	builtOnce.Do(func() { builtDir, builtDirErr = os.MkdirTemp("", "sallyport-bin-") })
	if builtDirErr != nil {
		return "", builtDirErr
	}
	bin := filepath.Join(builtDir, name)
	cmd := exec.Command("go", "build", "-tags", tags, "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as `make build`: static
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build -tags %q: %v\n%s", tags, err, out)
	}
	return bin, nil
}

// buildBinary compiles the full sallyport binary once for the binary tests;
// buildAgentBinary the agent-only build (bin/sallyport-agent). Their tags
// are the Makefile's TAGS and AGENT_TAGS, so they test what make ships.
var (
	buildBinary      = sync.OnceValues(func() (string, error) { return goBuildAsMake("sallyport", "TAGS") })
	buildAgentBinary = sync.OnceValues(func() (string, error) { return goBuildAsMake("sallyport-agent", "AGENT_TAGS") })
)

// goBuildAsMake is goBuild with the build tags of the Makefile's variable
// tagsVar.
func goBuildAsMake(name, tagsVar string) (string, error) {
	tags, err := makevars.Get("../../Makefile", tagsVar)
	if err != nil {
		return "", err
	}
	return goBuild(name, tags)
}

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
	return startBuilt(t, buildBinary, args...)
}

// startBuilt is startProc with the binary that build makes.
func startBuilt(t *testing.T, build func() (string, error), args ...string) *proc {
	t.Helper()
	bin, err := build()
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
	return p.waitLogN(msg, 1)
}

// waitLogN waits for the n-th log line whose msg contains msg and returns
// it.
func (p *proc) waitLogN(msg string, n int) map[string]any {
	p.t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	next, seen := 0, 0
	find := func() map[string]any {
		for {
			l := p.scan(&next, msg)
			if l == nil {
				return nil
			}
			next++
			if seen++; seen == n {
				return l
			}
		}
	}
	for {
		if l := find(); l != nil {
			return l
		}
		select {
		case <-p.seen:
		case <-p.done:
			if l := find(); l != nil {
				return l
			}
			p.t.Fatalf("process exited after %d of %d log lines %q:\n%s", seen, n, msg, p.output())
		case <-deadline.C:
			p.t.Fatalf("%d of %d log lines %q within 20s:\n%s", seen, n, msg, p.output())
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
	gw, public, agentYAML := startBinaryGateway(t, dir, token, backend.URL)
	adminAddr, _ := gw.waitLog("gateway listening")["admin"].(string)
	if res, err := http.Get("http://" + adminAddr + "/healthz"); err != nil || res.StatusCode != 200 {
		t.Fatalf("admin /healthz: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	if fp, _ := gw.waitLog("tunnel certificate")["fingerprint"].(string); !strings.HasPrefix(fp, "sha256:") {
		t.Fatalf("fingerprint not logged: %q", fp)
	}

	ag := startProc(t, "agent", "--config", agentYAML("agent-1", token))
	ag.waitLog("connected to the gateway")
	// Idle, both run on one P (internal/procstune) and say so at debug.
	if runtime.NumCPU() > 1 {
		for name, p := range map[string]*proc{"gateway": gw, "agent": ag} {
			if line := p.waitLog("GOMAXPROCS changed"); line["one_p"] != true || line["gomaxprocs"] != 1.0 {
				t.Errorf("%s: first GOMAXPROCS change %v, want one P", name, line)
			}
		}
		// An operator sees it in the Go collector's metrics.
		if body := getText(t, "http://"+adminAddr+"/metrics"); !strings.Contains(body, "\ngo_sched_gomaxprocs_threads 1\n") {
			t.Errorf("gateway /metrics lacks go_sched_gomaxprocs_threads 1:\n%s", body)
		}
	} else if os.Getenv("CI") != "" {
		t.Error("one CPU: the GOMAXPROCS tuner is off and this test cannot check it; CI must have two")
	}

	get := func() (int, string) { return getHello(t, public) }
	if code, body := get(); code != 200 || body != "private app says hi to hello.test" {
		t.Fatalf("relayed GET = %d %q", code, body)
	}
	// The admin listener serves the gateway's metrics without a token.
	if body, want := getText(t, "http://"+adminAddr+"/metrics"), `sallyport_gateway_exchanges_total{app="hello",class="2xx"} 1`; !strings.Contains(body, want) {
		t.Errorf("gateway /metrics lacks %q:\n%s", want, body)
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

// TestBinaryAgentOnly: the agent-only build (bin/sallyport-agent) serves
// as an agent of the full binary's gateway, says where the commands it
// leaves out live, and links neither the gateway's database nor its
// pre-authentication or the bench. That is what keeps an idle agent's
// resident memory small (logged here; measured in the README).
func TestBinaryAgentOnly(t *testing.T) {
	testrig.SkipShort(t, "builds and runs the binary")
	slim, err := buildAgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	full, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	modules := func(bin string) map[string]bool {
		t.Helper()
		bi, err := buildinfo.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		out := make(map[string]bool)
		for _, d := range bi.Deps {
			out[d.Path] = true
		}
		return out
	}
	slimMods, fullMods := modules(slim), modules(full)
	for _, m := range []string{"modernc.org/sqlite", "github.com/coreos/go-oidc/v3", "github.com/HdrHistogram/hdrhistogram-go"} {
		if !fullMods[m] {
			t.Errorf("the full binary does not link %s: this check no longer tells the builds apart", m)
		}
		if slimMods[m] {
			t.Errorf("the agent-only build links %s", m)
		}
	}

	out, err := exec.Command(slim, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "(agent-only build)") {
		t.Fatalf("agent-only version: %v %q", err, out)
	}
	if out, err := exec.Command(full, "version").CombinedOutput(); err != nil || strings.Contains(string(out), "agent-only") {
		t.Fatalf("full version: %v %q", err, out)
	}
	out, err = exec.Command(slim, "gateway", "--config", "gateway.yaml").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 ||
		!strings.Contains(string(out), `"gateway" is not in this agent-only build`) ||
		!strings.Contains(string(out), "full sallyport binary") {
		t.Fatalf("agent-only gateway: %v %q", err, out)
	}

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "slim agent relayed "+r.Method)
	}))
	defer backend.Close()
	const token = "tok-agent-only-build"
	gw, public, agentYAML := startBinaryGateway(t, t.TempDir(), token, backend.URL)
	slimYAML := agentYAML("slim", token)
	appendFile(t, slimYAML, "metrics_addr: \"127.0.0.1:0\"\n")
	ag := startBuilt(t, buildAgentBinary, "agent", "--config", slimYAML)
	metricsURL, _ := ag.waitLog("serving metrics")["metrics"].(string)
	ag.waitLogN("connected to the gateway", 2)
	if code, body := getHello(t, public); code != 200 || body != "slim agent relayed GET" {
		t.Fatalf("GET through the agent-only build = %d %q", code, body)
	}
	// metrics_addr serves the agent's metrics, in the agent-only build too.
	for _, want := range []string{`sallyport_agent_exchanges_total{app="hello",outcome="2xx"} 1`,
		"sallyport_agent_certificate_expiry_timestamp_seconds "} {
		if body := getText(t, metricsURL); !strings.Contains(body, want) {
			t.Errorf("agent /metrics lacks %q:\n%s", want, body)
		}
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", ag.cmd.Process.Pid)); err == nil {
		for _, l := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				t.Logf("agent-only build, 2 sessions, after one exchange: %s", strings.Join(strings.Fields(l), " "))
			}
		}
	}
	http.DefaultClient.CloseIdleConnections()
	if code := ag.stop(); code != 0 {
		t.Fatalf("agent exit code after SIGTERM = %d\n%s", code, ag.output())
	}
	if code := gw.stop(); code != 0 {
		t.Fatalf("gateway exit code after SIGTERM = %d\n%s", code, gw.output())
	}
}

// startBinaryGateway runs the full binary's gateway from a YAML file in
// dir with token for group default and one app, hello.test → backendURL.
// It returns the process, the public address and a function that writes an
// agent config (name, token; 2 connections) and returns its path.
func startBinaryGateway(t *testing.T, dir, token, backendURL string) (*proc, string, func(name, tok string) string) {
	t.Helper()
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
`, token, filepath.Join(dir, "gw"), backendURL))
	gw := startProc(t, "gateway", "--config", gwYAML)
	listening := gw.waitLog("gateway listening")
	public, _ := listening["public"].(string)
	tunnelAddr, _ := listening["tunnel"].(string)
	if public == "" || tunnelAddr == "" {
		t.Fatalf("listening line without addresses: %v", listening)
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
`, tunnelAddr, filepath.Join(dir, "gw", "tunnel-cert.pem"), tok, filepath.Join(dir, name), name, strings.TrimPrefix(backendURL, "http://")))
		return p
	}
	return gw, public, agentYAML
}

// getText GETs url and returns its body; anything but 200 fails the test.
func getText(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d %s", url, res.StatusCode, b)
	}
	return string(b)
}

// appendFile adds content to the end of the file at path.
func appendFile(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
}

// getHello sends GET / for hello.test to the gateway at public.
func getHello(t *testing.T, public string) (int, string) {
	t.Helper()
	return getHost(t, public, "hello.test")
}

// getHost sends GET / for host to the gateway at public.
func getHost(t *testing.T, public, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+public+"/", nil)
	req.Host = host
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
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
