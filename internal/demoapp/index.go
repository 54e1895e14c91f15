package demoapp

import (
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/sallyport/sallyport/internal/htmlpage"
)

// Title is the title and heading of the page at /, for tests that check they reached this backend.
const Title = "Served by a private backend through Sallyport"

// highlighted are the request headers a proxy adds, shown marked on the page.
var highlighted = map[string]bool{
	"X-Forwarded-For":   true,
	"X-Forwarded-Host":  true,
	"X-Forwarded-Proto": true,
	"X-Request-Id":      true,
	"Forwarded":         true,
	// Set by the gateway for apps with pre-authentication.
	"X-Sallyport-User":      true,
	"X-Sallyport-Email":     true,
	"X-Sallyport-Groups":    true,
	"X-Sallyport-Assertion": true,
}

// indexPage is what the page at / shows (write).
type indexPage struct {
	Title      string
	Method     string
	Host       string
	Path       string // the request target (path and query) as received
	RemoteAddr string
	Proto      string
	Proxied    bool // some highlighted header is present
	Headers    []headerRow
	Identity   *identity // signed-in user, when the gateway sent one
}

// headerRow is one header value; a header with several values has several rows.
type headerRow struct {
	Name, Value string
	Highlight   bool
}

func (a *app) serveIndex(w http.ResponseWriter, r *http.Request) {
	p := indexPage{
		Title:      Title,
		Method:     r.Method,
		Host:       r.Host,
		Path:       r.RequestURI,
		RemoteAddr: r.RemoteAddr,
		Proto:      r.Proto,
		Identity:   identityFrom(r),
	}
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		hl := highlighted[name]
		p.Proxied = p.Proxied || hl
		for _, v := range r.Header[name] {
			p.Headers = append(p.Headers, headerRow{Name: name, Value: v, Highlight: hl})
		}
	}

	var buf strings.Builder
	p.write(&buf)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Security-Policy", strings.Join([]string{
		"default-src 'none'",
		"style-src 'unsafe-inline'",
		"script-src 'unsafe-inline'",
		"connect-src 'self' ws: wss:",
		"base-uri 'none'",
		"form-action 'none'",
	}, "; "))
	_, _ = io.WriteString(w, buf.String())
}

// write writes the page (htmlpage says why it is not a template). It is
// self-contained: inline CSS and script, no external assets. The script
// takes nothing from the request; it finds the WebSocket URL relative to
// the page's own address.
func (p *indexPage) write(b *strings.Builder) {
	t := htmlpage.Text
	b.WriteString(indexHead + "<title>" + t(p.Title) + indexStyle + "<h1>" + t(p.Title) + "</h1>\n")
	if p.Proxied {
		b.WriteString(`<p class="lede">This request reached the backend through a proxy: the highlighted headers below were added on the way.</p>`)
	} else {
		b.WriteString(`<p class="lede">No forwarding headers: this request reached the backend directly, not through a proxy.</p>`)
	}
	b.WriteString("\n\n")
	if id := p.Identity; id != nil {
		b.WriteString(`
<section id="identity">
<h2>Signed in</h2>
<p>The gateway signed this user in before the request reached the app, and told the app who it is:</p>
<dl>
<dt>X-Sallyport-User</dt><dd id="id-user">` + t(id.User) + `</dd>
<dt>X-Sallyport-Email</dt><dd id="id-email">` + t(id.Email) + `</dd>
<dt>X-Sallyport-Groups</dt><dd id="id-groups">` + t(id.Groups) + `</dd>
</dl>
`)
		if id.Claims != "" {
			b.WriteString(`<p>X-Sallyport-Assertion, decoded (an app verifies it with the gateway's <a href="/.well-known/sallyport/jwks.json">JWKS</a>):</p>
<pre><code>` + t(id.Claims) + `</code></pre>`)
		}
		b.WriteString(`
<p><a href="/.sallyport/auth/logout">Sign out</a></p>
</section>
`)
	}
	b.WriteString(`
<section>
<h2>Request as the backend received it</h2>
<dl>
<dt>Method</dt><dd>` + t(p.Method) + `</dd>
<dt>Host</dt><dd>` + t(p.Host) + `</dd>
<dt>Path</dt><dd>` + t(p.Path) + `</dd>
<dt>Remote address</dt><dd>` + t(p.RemoteAddr) + `</dd>
<dt>Protocol</dt><dd>` + t(p.Proto) + `</dd>
</dl>
</section>

<section>
<h2>Request headers</h2>
<table>
<thead><tr><th>Name</th><th>Value</th></tr></thead>
<tbody>`)
	for _, h := range p.Headers {
		if h.Highlight {
			b.WriteString("\n<tr class=\"hl\"><td>" + t(h.Name) + `<span class="tag">proxy</span></td><td>` + t(h.Value) + "</td></tr>")
		} else {
			b.WriteString("\n<tr><td>" + t(h.Name) + "</td><td>" + t(h.Value) + "</td></tr>")
		}
	}
	if len(p.Headers) == 0 {
		b.WriteString("\n<tr><td colspan=\"2\">(none)</td></tr>")
	}
	b.WriteString("\n" + indexTail)
}

const indexHead = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
`

const indexStyle = `</title>
<style>
:root { color-scheme: light dark; --fg: #1d2330; --muted: #5d6675; --bg: #f6f7f9; --card: #fff;
  --line: #e2e5ea; --accent: #2f62d6; --hl: #fff4c2; --hl-fg: #5a4300; --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ef; --muted: #9aa3b2; --bg: #12151b; --card: #1b1f27;
  --line: #2c323d; --accent: #7aa2ff; --hl: #3b3213; --hl-fg: #ffe08a; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; }
main { max-width: 60rem; margin: 0 auto; padding: 2rem 1.25rem 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.05rem; margin: 0 0 .75rem; }
.lede { color: var(--muted); margin: 0 0 1.5rem; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 1rem 1.25rem; margin: 0 0 1rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1.25rem; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; font-family: var(--mono); word-break: break-all; }
table { width: 100%; border-collapse: collapse; font-size: .9rem; }
th, td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-top: 1px solid var(--line); }
th { color: var(--muted); font-weight: 600; border-top: none; }
td { font-family: var(--mono); word-break: break-all; }
td:first-child { white-space: nowrap; word-break: normal; }
tr.hl td { background: var(--hl); color: var(--hl-fg); font-weight: 600; }
.tag { font: 600 .7rem/1 system-ui, sans-serif; text-transform: uppercase; letter-spacing: .04em; margin-left: .4rem; opacity: .75; }
ul.links { margin: 0; padding-left: 1.2rem; }
a { color: var(--accent); }
code { font-family: var(--mono); }
form { display: flex; gap: .5rem; }
input[type=text] { flex: 1; font: inherit; padding: .4rem .6rem; border: 1px solid var(--line); border-radius: 6px; background: var(--bg); color: var(--fg); }
button { font: inherit; padding: .4rem .9rem; border: 0; border-radius: 6px; background: var(--accent); color: #fff; cursor: pointer; }
#ws-state { color: var(--muted); font-size: .85rem; margin: .5rem 0; }
#ws-log { font-family: var(--mono); font-size: .85rem; min-height: 3rem; max-height: 14rem; overflow-y: auto;
  border: 1px solid var(--line); border-radius: 6px; padding: .5rem; background: var(--bg); }
#ws-log .out { color: var(--muted); }
#ws-log .err { color: #d33; }
</style>
</head>
<body>
<main>
`

const indexTail = `</tbody>
</table>
</section>

<section>
<h2>Try</h2>
<ul class="links">
<li><a href="echo">echo</a>: this request as JSON, with a SHA-256 of its body (<code>?status=418</code>, <code>?delay=2s</code>)</li>
<li><a href="stream">stream</a>: ten Server-Sent Events, one a second (<code>?n=</code>, <code>?interval=</code>)</li>
<li><a href="bytes/1048576">bytes/1048576</a>: 1 MiB of deterministic bytes (<code>?chunked=1</code> adds a SHA-256 trailer)</li>
</ul>
</section>

<section>
<h2>WebSocket echo</h2>
<form id="ws-form" autocomplete="off">
<input id="ws-input" type="text" placeholder="Type a line and press Enter" aria-label="Message">
<button type="submit">Send</button>
</form>
<div id="ws-state">not connected</div>
<div id="ws-log" aria-live="polite"></div>
</section>
</main>
<script>
(function () {
  "use strict";
  var form = document.getElementById("ws-form");
  var input = document.getElementById("ws-input");
  var state = document.getElementById("ws-state");
  var log = document.getElementById("ws-log");
  var ws = null;

  function line(text, cls) {
    var d = document.createElement("div");
    d.textContent = text;
    if (cls) { d.className = cls; }
    log.appendChild(d);
    log.scrollTop = log.scrollHeight;
  }

  function connect() {
    var u = new URL("ws", location.href);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    state.textContent = "connecting to " + u.href + " ...";
    ws = new WebSocket(u.href);
    ws.onopen = function () { state.textContent = "connected to " + u.href; };
    ws.onmessage = function (e) {
      line(typeof e.data === "string" ? "\u2190 " + e.data : "\u2190 (binary message)");
    };
    ws.onerror = function () { line("WebSocket error", "err"); };
    ws.onclose = function (e) {
      state.textContent = "closed (code " + e.code + (e.reason ? ", " + e.reason : "") + "); sending reconnects";
    };
  }

  function send(text) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(text);
      line("\u2192 " + text, "out");
      return;
    }
    if (!ws || ws.readyState === WebSocket.CLOSING || ws.readyState === WebSocket.CLOSED) {
      connect();
    }
    ws.addEventListener("open", function () { send(text); }, { once: true });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (input.value !== "") {
      send(input.value);
      input.value = "";
    }
  });
  connect();
})();
</script>
</body>
</html>
`
