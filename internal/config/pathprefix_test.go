package config

import (
	"strings"
	"testing"
)

// TestPathPrefixAndPublicPathsAsCompared: a path_prefix the router can
// never match, or whose app the gateway can never reach, is refused with
// file, line and key; so are the public paths that the gateway refused
// only when it was built, without file or line ("gateway: app "a": public
// path "/a/..;x" is not a normalised path"). Before, all were accepted:
// a path_prefix "/a/../b", "/a//b", "/caf%C3%A9" or "/a%2fb" never
// matched a request, one with %2F or ";" (whose requests the gateway
// refuses as read elsewhere by backends) answered 400 to every request,
// and "/static/*" never matched.
func TestPathPrefixAndPublicPathsAsCompared(t *testing.T) {
	const oidc = "oidc:\n  providers:\n    - {name: a, issuer: \"https://a/\", client_id: c}\n"
	const prefix = oidc + minimalApp + "    path_prefix: "
	const public = oidc + minimalApp + "    preauth: oidc\n    public_paths: "
	for in, want := range map[string]string{
		prefix + `"/a%2Fb"`:                     `gateway.yaml:10: apps[0].path_prefix: "/a%2Fb": an encoded slash (%2F) or a ; in a path_prefix makes the app unreachable`,
		prefix + `"/a%2fb"`:                     `apps[0].path_prefix: "/a%2fb": an encoded slash (%2F)`,
		prefix + `"/a;v=1"`:                     `apps[0].path_prefix: "/a;v=1": an encoded slash (%2F) or a ;`,
		prefix + `"/static/*"`:                  `gateway.yaml:10: apps[0].path_prefix: "/static/*": a path_prefix is a prefix, not a pattern; write "/static"`,
		prefix + `"/a/../b"`:                    `gateway.yaml:10: apps[0].path_prefix: "/a/../b" must be written as requests are compared`,
		prefix + `"/a//b"`:                      `apps[0].path_prefix: "/a//b" must be written`,
		prefix + `"/caf%C3%A9"`:                 `apps[0].path_prefix: "/caf%C3%A9" must be written`,
		prefix + `"/a\\b"`:                      `apps[0].path_prefix: "/a\\b" must be written`,
		prefix + `"/a\tb"`:                      `apps[0].path_prefix: "/a\tb" must be written`,
		public + `["/a/..;x"]`:                  `gateway.yaml:11: apps[0].public_paths[0]: "/a/..;x" must be written as requests are compared`,
		public + `["/a/.;"]`:                    `apps[0].public_paths[0]: "/a/.;" must be written`,
		public + `["/a%2F..%2F"]`:               `apps[0].public_paths[0]: "/a%2F..%2F" must be written`,
		public + `["/..%2fx"]`:                  `apps[0].public_paths[0]: "/..%2Fx" must be written`,
		public + `["/a\u0001b"]`:                `apps[0].public_paths[0]: "/a\x01b" must be written`,
		public + `["/a\u007f"]`:                 `apps[0].public_paths[0]: "/a\x7f" must be written`,
		prefix + `"/"`:                          ``,
		prefix + `"//"`:                         ``,
		prefix + `"/api/"`:                      ``,
		prefix + `"/café/a b"`:                  ``,
		prefix + `"/a.b/..c/x~"`:                ``,
		public + `["/a;b", "/..x/.y", "/café"]`: ``,
	} {
		_, err := ParseGateway("gateway.yaml", []byte(in+"\n"))
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", in[len(oidc+minimalApp):], err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in[len(oidc+minimalApp):], err, want)
		}
	}
}
