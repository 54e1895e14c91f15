package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestAdminBodyKeysExact: a request body's keys are the documented field
// names, spelt exactly, each once. encoding/json alone matched keys
// without regard to case and let the last repeated key win, so
// {"group":"default","GROUP":"ops"} created a token for group ops while
// anything that read the request (a proxy, an audit log, a person) saw
// group default.
func TestAdminBodyKeysExact(t *testing.T) {
	base, db := newAdminServer(t)
	for _, tc := range []struct{ name, body, errHas string }{
		{"other case wins", `{"group":"default","GROUP":"ops"}`, `"GROUP"`},
		{"capitalised", `{"Group":"default"}`, `"Group"`},
		{"repeated", `{"group":"default","group":"ops"}`, `"group" given twice`},
		{"repeated uses", `{"group":"default","uses":1,"uses":0}`, `"uses" given twice`},
		{"null", `null`, "want a JSON object"},
		{"array", `[{"group":"default"}]`, "want a JSON object"},
		{"string", `"default"`, "want a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := adminDo(t, base, "POST", "/api/v1/tokens", tc.body)
			var e APIError
			if res.StatusCode != 400 || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, tc.errHas) {
				t.Fatalf("POST %s = %d %s, want 400 mentioning %s", tc.body, res.StatusCode, body, tc.errHas)
			}
		})
	}
	toks, err := db.Tokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 0 {
		t.Fatalf("refused requests created %d tokens (first for group %q)", len(toks), toks[0].Group)
	}
	res, body := adminDo(t, base, "POST", "/api/v1/tokens", `{"group":"default","ttl":"2h","uses":3}`)
	if res.StatusCode != 201 {
		t.Fatalf("a plain request = %d %s, want 201", res.StatusCode, body)
	}
}
