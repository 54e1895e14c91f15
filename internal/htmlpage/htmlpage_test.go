package htmlpage

import (
	"bytes"
	"html/template"
	"strings"
	"testing"
)

// TestURL: URLs whose scheme a browser would run or render are filtered,
// in any case and with the characters browsers drop from a scheme; web
// and mail links and relative URLs stay, escaped for the attribute.
func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://idp.example.com/logout?a=1&b=2", "https://idp.example.com/logout?a=1&amp;b=2"},
		{"http://x.example/", "http://x.example/"},
		{"HTTPS://X.EXAMPLE/", "HTTPS://X.EXAMPLE/"},
		{"mailto:ops@example.com", "mailto:ops@example.com"},
		{"/.sallyport/auth/logout", "/.sallyport/auth/logout"},
		{"/path/with:colon", "/path/with:colon"},
		{"relative/page", "relative/page"},
		{`/"><script>`, "/&#34;&gt;&lt;script&gt;"},
		{"", ""},
		{"javascript:alert(1)", Filtered},
		{"JavaScript:alert(1)", Filtered},
		{" javascript:alert(1)", Filtered},
		{"java\tscript:alert(1)", Filtered},
		{"java\nscript:alert(1)", Filtered},
		{"\x01javascript:alert(1)", Filtered},
		{"data:text/html,<script>alert(1)</script>", Filtered},
		{"vbscript:msgbox(1)", Filtered},
		{"ftp://files.example/", Filtered},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzAsTemplate: for any string, Text writes exactly what html/template
// writes in a text node and in a quoted attribute, and URL filters exactly
// the URLs html/template filters from an href, and writes nothing that
// ends the attribute.
func FuzzAsTemplate(f *testing.F) {
	for _, s := range []string{
		// text: every character that matters, and some that do not
		"", "plain", `<script>alert("x")</script>`, `a & b`, `it's`, `"quoted"`, "nul\x00byte",
		"ünïcödé → ok", `&amp; already`, `><'"&+`, "+ADw-script+AD4-", "\xff\xfe",
		// URLs: kept, filtered, and the spellings in between
		"https://a.example/x", "https://x/?a=1&b=<2>", "mailto:a@b", "/x:y", "a/b:c", "//host/path", "#frag",
		"javascript:alert(1)", "JAVASCRIPT:x", " JaVaScRiPt:x", " javascript:x", "java\x00script:x",
		"data:,x", "data:", "x:y", "tel:123", "?q=a:b", ":",
	} {
		f.Add(s)
	}
	text := template.Must(template.New("").Parse(`<p title="{{.}}">{{.}}</p>`))
	href := template.Must(template.New("").Parse(`<a href="{{.}}">`))
	f.Fuzz(func(t *testing.T, s string) {
		var want bytes.Buffer
		if err := text.Execute(&want, s); err != nil {
			t.Fatalf("html/template refuses %q: %v", s, err)
		}
		if got := `<p title="` + Text(s) + `">` + Text(s) + `</p>`; got != want.String() {
			t.Fatalf("Text(%q):\n got %s\nwant %s", s, got, want.String())
		}
		want.Reset()
		if err := href.Execute(&want, s); err != nil {
			t.Fatalf("html/template refuses %q: %v", s, err)
		}
		u := URL(s)
		if (u == Filtered) != bytes.Contains(want.Bytes(), []byte(Filtered)) {
			t.Fatalf("URL(%q) = %q; html/template: %s", s, u, want.String())
		}
		if strings.ContainsAny(u, `"<>`) {
			t.Fatalf("URL(%q) = %q: ends the attribute", s, u)
		}
	})
}
