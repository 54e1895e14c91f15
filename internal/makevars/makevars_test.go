package makevars

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "Makefile")
	const text = "# TAGS := comment\nGO ?= go\nTAGS       := a,b\nAGENT_TAGS := x,$(TAGS)\nbuild:\n\tFOO := $(TAGS)\nLATE := $(LATER)\nLATER := z\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	vars, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"TAGS": "a,b", "AGENT_TAGS": "x,a,b", "LATE": "$(LATER)", "LATER": "z"}
	if len(vars) != len(want) {
		t.Errorf("Read = %v, want %v", vars, want)
	}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, vars[k], v, vars)
		}
	}
	if _, err := Get(path, "GO"); err == nil || !strings.Contains(err.Error(), "sets no GO") {
		t.Errorf("Get of a ?= variable: %v, want an error naming it", err)
	}
	if _, err := Get(filepath.Join(t.TempDir(), "none"), "TAGS"); err == nil {
		t.Error("Get of a missing file: no error")
	}
}

// TestRepositoryMakefile: the repository's Makefile sets the build tags
// the binary tests and internal/deptest read.
func TestRepositoryMakefile(t *testing.T) {
	for _, name := range []string{"TAGS", "AGENT_TAGS"} {
		v, err := Get("../../Makefile", name)
		if err != nil || v == "" {
			t.Errorf("%s = %q, %v", name, v, err)
		}
	}
}
