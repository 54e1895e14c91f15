package config

import (
	"strings"
	"testing"
)

// TestPublicPathsCheckedWithLine: a public path the gateway cannot match
// as written is refused by the config with the file, line and key, and a
// hint. Before, "/a/../b", "/a%2fb" (lower case) and "/a\\b" were refused
// only when the gateway was built, without file, line or key ("gateway:
// app "wiki": public path … is not a normalised path"), "/a%2fb" although
// the message allowed %2F; and "/static/*" or "/s?x", which can never
// match, were accepted without a word.
func TestPublicPathsCheckedWithLine(t *testing.T) {
	const head = "oidc:\n  providers:\n    - {name: a, issuer: \"https://a/\", client_id: c}\n" + minimalApp + "    preauth: oidc\n    public_paths: "
	for pp, want := range map[string]string{
		`["/static/*"]`:   `gateway.yaml:11: apps[0].public_paths[0]: "/static/*": public_paths are path prefixes, not patterns; write "/static"`,
		`["/s?x"]`:        `gateway.yaml:11: apps[0].public_paths[0]: must be a path without ? or #`,
		`["/a/../b"]`:     `gateway.yaml:11: apps[0].public_paths[0]: "/a/../b" must be written as requests are compared`,
		`["/a//b"]`:       `apps[0].public_paths[0]: "/a//b" must be written`,
		`["/a/./b"]`:      `apps[0].public_paths[0]: "/a/./b" must be written`,
		`["/a\\b"]`:       `apps[0].public_paths[0]: "/a\\b" must be written`,
		`["/%61"]`:        `apps[0].public_paths[0]: "/%61" must be written`,
		`["/ok", "/a/"]`:  ``,
		`["/x", "/a//"]`:  ``,
		`["/ok", "/a/."]`: `gateway.yaml:11: apps[0].public_paths[1]: "/a/." must be written`,
	} {
		_, err := ParseGateway("gateway.yaml", []byte(head+pp+"\n"))
		if want == "" {
			if err != nil {
				t.Errorf("public_paths %s: %v", pp, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("public_paths %s: %v, want %q", pp, err, want)
		}
	}
	g, err := ParseGateway("gateway.yaml", []byte(head+`["/", "//", "/health", "/static/", "/a%2fb", "/a%2Fb/c"]`+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(g.Apps[0].PublicPaths, " "); got != "/ // /health /static/ /a%2Fb /a%2Fb/c" {
		t.Errorf("public paths %q", got)
	}
}
