package logging

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewAcceptsFlagValues(t *testing.T) {
	for _, level := range append([]string{"", "INFO", "Warn"}, Levels...) {
		for _, format := range append([]string{"", "JSON"}, Formats...) {
			log, err := New(level, format, DefaultFlushInterval)
			if err != nil {
				t.Errorf("New(%q, %q): %v", level, format, err)
				continue
			}
			_ = log.Sync() // stderr may not support fsync; the error does not matter here
		}
	}
}

func TestNewRejectsBadValues(t *testing.T) {
	if _, err := New("verbose", "console", 0); err == nil || err.Error() != `log level "verbose": must be one of debug, info, warn, error` {
		t.Errorf("bad level: %v", err)
	}
	if _, err := New("info", "text", 0); err == nil || err.Error() != `log format "text": must be one of console, json` {
		t.Errorf("bad format: %v", err)
	}
}

var iso8601 = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`)

func TestJSONFormat(t *testing.T) {
	var buf bytes.Buffer
	log, err := build(&buf, "warn", "json", 0)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", zap.String("app", "hello"))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want 1 line (info filtered at warn), got %q", buf.String())
	}
	var entry map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &entry); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	if entry["level"] != "warn" || entry["msg"] != "shown" || entry["app"] != "hello" {
		t.Errorf("entry = %v", entry)
	}
	if ts, _ := entry["time"].(string); !iso8601.MatchString(ts) {
		t.Errorf("time %q is not ISO 8601", entry["time"])
	}
	if c, _ := entry["caller"].(string); !strings.Contains(c, "logging_test.go") {
		t.Errorf("caller = %q", entry["caller"])
	}
}

func TestConsoleFormat(t *testing.T) {
	var buf bytes.Buffer
	log, err := build(&buf, "debug", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("dbg", zap.String("k", "v"))
	out := buf.String()
	if !iso8601.MatchString(out) || !strings.Contains(out, "DEBUG") || !strings.Contains(out, "dbg") || !strings.Contains(out, `{"k": "v"}`) {
		t.Errorf("console line = %q", out)
	}
}
