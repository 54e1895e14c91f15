package config

import (
	"fmt"
	"strings"
	"testing"
)

// TestYAMLSyntaxErrorsNameTheBrokenLine: yaml.v3 names the line where the
// construct it was reading began (a tab on line 12 was reported at line 11,
// a mis-indented line 12 at line 8, an unclosed [ on line 3 at line 2), and
// its words say nothing of what to do: the error names the line that broke
// the file, the tab's line, and a hint.
func TestYAMLSyntaxErrorsNameTheBrokenLine(t *testing.T) {
	const head = "public:\n  addr: \"127.0.0.1:20110\"\ntunnel:\n  addr: \"127.0.0.1:20111\"\n" +
		"admin:\n  addr: \"127.0.0.1:20112\"\ndata_dir: ./data\napps:\n  - name: hello\n" +
		"    hosts: [\"localhost\"]\n    backend: http://127.0.0.1:20103\n"
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"tab in indentation", head + "\tgroup: default\n", []string{
			"gateway.yaml:12: found a tab character that violates indentation: line 12 is indented with a tab (column 1)", syntaxHint}},
		{"tab after spaces", "a:\n  b: 1\n  \tc: 2\n", []string{"gateway.yaml:3:", "line 3 is indented with a tab (column 3)", syntaxHint}},
		{"mis-indented", head + "   group: default\n", []string{"gateway.yaml:12: did not find expected '-' indicator", syntaxHint}},
		{"unclosed bracket", "apps:\n  - name: a\n    hosts: [\"a\"\n    backend: http://x\n", []string{"gateway.yaml:3: did not find expected ',' or ']'", syntaxHint}},
		{"bracket closed on a later line", "data_dir: x\npublic: {addr: \":80\",\n  idle_timeout: 1m}\nadmin: : x\n", []string{"gateway.yaml:4: mapping values are not allowed", syntaxHint}},
		{"unclosed quote", "data_dir: x\npublic:\n  addr: \":80\n  idle_timeout: 1m\n", []string{"gateway.yaml:3: found unexpected end of stream", syntaxHint}},
		{"flow node", "public:\n  addr: [\n", []string{"gateway.yaml:2: did not find expected node content", syntaxHint}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseGateway("gateway.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}

// TestControlCharacterNamesItsPlace: yaml.v3 says only "control characters
// are not allowed" (the old error: `ctl.yaml: control characters are not
// allowed`); the error names the line, column and character. Bytes that
// are not UTF-8 likewise.
func TestControlCharacterNamesItsPlace(t *testing.T) {
	_, err := ParseAgent("ctl.yaml", []byte("name: a\ngateway: \"a\x07b\"\n"))
	want := `ctl.yaml:2: control character U+0007 at column 12 is not allowed: delete it (inside double quotes, write it as an escape such as \x07)`
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant   %s", err, want)
	}
	_, err = ParseAgent("latin1.yaml", []byte("name: a\n\nname2: caf\xe9\n"))
	if err == nil || !strings.Contains(err.Error(), "latin1.yaml:3: ") || !strings.Contains(err.Error(), "at column 11: the file must be UTF-8 text") {
		t.Errorf("not UTF-8: %v", err)
	}
}

// TestSyntaxErrorSearchStaysShort: a config of 900 lines broken in its
// middle was parsed again once per line below the break (450 prefixes of
// 10-20 KB, 6.7 MB, 1.7 s before the error showed); the search now halves
// its way to the break. The line is the same.
func TestSyntaxErrorSearchStaysShort(t *testing.T) {
	var b strings.Builder
	b.WriteString("data_dir: ./x\napps:\n")
	for i := 0; i < 224; i++ {
		if i == 112 {
			b.WriteString("     oops: 1\n") // line 451
		}
		fmt.Fprintf(&b, "  - name: app%d\n    group: g\n    hosts: [\"h%d.example\"]\n    backend: http://127.0.0.1:%d\n", i, i, 1000+i)
	}
	data := []byte(b.String())
	line, spent := brokenLineSpent(data)
	if line != 451 || spent > 1<<20 {
		t.Errorf("brokenLineSpent = line %d, %d bytes parsed again; want line 451 in at most 1 MiB (%d bytes in the file)", line, spent, len(data))
	}
	_, err := ParseGateway("big.yaml", data)
	if err == nil || !strings.HasPrefix(err.Error(), "big.yaml:451: ") {
		t.Errorf("error %v, want it at big.yaml:451", err)
	}
}

// TestDecodeErrorOfValidYAMLNamesNoLine: a file that is YAML but does not
// decode (a merge key whose value is no mapping) has no broken line; the
// search for one named the file's last line, with the syntax hint.
func TestDecodeErrorOfValidYAMLNamesNoLine(t *testing.T) {
	data := "x: &s 1\nadmin:\n  <<: *s\n  addr: \"127.0.0.1:20112\"\ndata_dir: ./data\npublic:\n  addr: \":8080\"\n"
	_, err := ParseGateway("gw.yaml", []byte(data))
	if err == nil || !strings.HasPrefix(err.Error(), "gw.yaml: map merge requires") || strings.Contains(err.Error(), syntaxHint) {
		t.Errorf("error %v, want gw.yaml: map merge requires … without a line or the syntax hint", err)
	}
}
