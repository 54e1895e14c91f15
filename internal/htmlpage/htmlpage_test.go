package htmlpage

import (
	"bytes"
	"html/template"
	"strings"
	"testing"
)

// TestTextAsTemplate: Text writes what html/template writes for a value in
// a text node and in a quoted attribute, for every character that matters.
func TestTextAsTemplate(t *testing.T) {
	tmpl := template.Must(template.New("").Parse(`<p title="{{.}}">{{.}}</p>`))
	for _, s := range []string{
		"", "plain", `<script>alert("x")</script>`, `a & b`, `it's`, `"quoted"`, "nul\x00byte",
		"ünïcödé → ok", `&amp; already`, `><'"&+`, "+ADw-script+AD4-",
	} {
		var want bytes.Buffer
		if err := tmpl.Execute(&want, s); err != nil {
			t.Fatal(err)
		}
		got := `<p title="` + Text(s) + `">` + Text(s) + `</p>`
		if got != want.String() {
			t.Errorf("Text(%q):\n got %s\nwant %s", s, got, want.String())
		}
	}
}

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

// TestURLAsTemplate: where html/template keeps a URL, URL keeps it too,
// and where it filters one, so does URL (html/template also
// percent-encodes some characters; both forms read the same in a browser).
func TestURLAsTemplate(t *testing.T) {
	href := template.Must(template.New("").Parse(`<a href="{{.}}">`))
	for _, s := range []string{
		"https://a.example/x", "javascript:alert(1)", "JAVASCRIPT:x", " javascript:x", "data:,x",
		"mailto:a@b", "/x:y", "x:y", "tel:123", "//host/path", "?q=a:b", "#frag",
	} {
		var want bytes.Buffer
		if err := href.Execute(&want, s); err != nil {
			t.Fatal(err)
		}
		filteredByTemplate := bytes.Contains(want.Bytes(), []byte(Filtered))
		if filteredByURL := URL(s) == Filtered; filteredByURL != filteredByTemplate {
			t.Errorf("%q: URL filters it: %v; html/template: %s", s, filteredByURL, want.String())
		}
	}
}

// FuzzAsTemplate: for any string, Text writes exactly what html/template
// writes in a text node and in a quoted attribute, and URL filters exactly
// the URLs html/template filters from an href, and writes nothing that
// ends the attribute.
func FuzzAsTemplate(f *testing.F) {
	for _, s := range []string{"", "x", "javascript:x", " JaVaScRiPt:x", "/a:b", "a/b:c", "mailto:x", "https://x/?a=1&b=<2>",
		`"'<>&+`, "\x00", "\xff\xfe", "data:", ":", "//x", "java\x00script:x"} {
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
