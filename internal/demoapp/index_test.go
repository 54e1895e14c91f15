package demoapp

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestIndex(t *testing.T) {
	srv := newServer(t, New())
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/?q=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "app.example.test"
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Forwarded-Host", "hello.example.com")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Request-Id", "req-42")
	req.Header.Set("X-Evil", `<script>alert("x")</script>`)
	req.Header.Add("X-Multi", "one")
	req.Header.Add("X-Multi", "two")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)

	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	for _, want := range []string{
		"<title>" + Title + "</title>",
		"<dd>GET</dd>",
		"<dd>app.example.test</dd>",
		"<dd>/?q=1</dd>",
		"<dd>127.0.0.1:", // remote address
		`<tr class="hl"><td>X-Forwarded-For<span class="tag">proxy</span></td><td>203.0.113.7</td></tr>`,
		`<tr class="hl"><td>X-Forwarded-Host<span class="tag">proxy</span></td><td>hello.example.com</td></tr>`,
		`<tr class="hl"><td>X-Forwarded-Proto<span class="tag">proxy</span></td><td>https</td></tr>`,
		`<tr class="hl"><td>X-Request-Id<span class="tag">proxy</span></td><td>req-42</td></tr>`,
		`<tr><td>X-Multi</td><td>one</td></tr>`,
		`<tr><td>X-Multi</td><td>two</td></tr>`,
		`&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`,
		`href="echo"`, `href="stream"`, `href="bytes/1048576"`,
		`new WebSocket(`,
		"through a proxy",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, `<script>alert`) {
		t.Error("header value reached the page unescaped")
	}
	for _, external := range []string{`src="http`, `href="http`, `@import`, `url(`} {
		if strings.Contains(page, external) {
			t.Errorf("page refers to an external asset (%q)", external)
		}
	}
}

func TestIndexDirect(t *testing.T) {
	srv := newServer(t, New())
	resp, page := do(t, srv, http.MethodGet, "/", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "reached the backend directly") {
		t.Fatalf("GET / = %d, page without the direct-request note", resp.StatusCode)
	}
	if strings.Contains(page, `class="hl"`) {
		t.Error("a header is highlighted although none came from a proxy")
	}
}
