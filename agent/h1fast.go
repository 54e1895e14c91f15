package agent

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The fast paths of an h1Conn exchange: writing a bodiless request and
// reading the usual response head (HTTP/1.1, a Content-Length, the whole
// head in the read buffer) without net/http's Request.Write and
// ReadResponse, which cost 28 allocations per small GET (and the parsing
// time that goes with them). Anything else takes net/http's code, which
// reads the same bytes: the fast reader only peeks until it is sure.

// h1DefaultUserAgent is what net/http sends when a request has no
// User-Agent header (an empty one sends none).
const h1DefaultUserAgent = "Go-http-client/1.1"

// h1WriteExclude are the headers that writeRequest writes itself (or that a
// bodiless request does not send), as Request.Write excludes them.
func h1WriteExclude(k string) bool {
	switch k {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// writeRequest writes the head of req, which h1SyncEligible accepted and
// whose header fields checkHeaderFields found valid, as Request.Write
// would: request line, Host, User-Agent, then the other headers sorted by
// name. It returns false, having written nothing, for what it leaves to
// Request.Write (a Host that needs converting or is invalid, a target with
// a control character, Close).
func writeRequest(bw *bufio.Writer, req *http.Request) bool {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if req.Close || !asciiNoPercent(host) || !httpguts.ValidHostHeader(host) {
		return false
	}
	target := req.URL.RequestURI()
	for i := 0; i < len(target); i++ {
		if c := target[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(target)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	ua := h1DefaultUserAgent
	if vv, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(vv) > 0 {
			ua = textproto.TrimString(vv[0])
		}
	}
	if ua != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(ua)
		bw.WriteString("\r\n")
	}
	var stack [24]string
	keys := stack[:0]
	for k := range req.Header {
		if !h1WriteExclude(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range req.Header[k] {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
	return true
}

// asciiNoPercent reports a host that needs no punycode conversion and has
// no IPv6 zone, which Request.Write would rewrite.
func asciiNoPercent(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] == '%' {
			return false
		}
	}
	return true
}

// h1Head is a parsed response head with its body framing.
type h1Head struct {
	status string // "200 OK"
	code   int
	header http.Header
	length int64
	size   int // bytes of the head, blank line included
}

// peekHead parses the response head that br holds, without consuming it,
// when it is the usual kind: HTTP/1.1, a final status other than 204 and
// 304, a single Content-Length and no Transfer-Encoding, Connection or
// Trailer header, no obsolete line folding. ok is false for everything else
// and for a head not yet wholly in the buffer: ReadResponse reads those.
func peekHead(br *bufio.Reader) (h h1Head, ok bool) {
	b, _ := br.Peek(br.Buffered())
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return h, false
	}
	head := string(b[:end+2]) // every line with its CRLF; one allocation
	h.size = end + 4
	line, rest, ok := cutLine(head)
	const proto = "HTTP/1.1 "
	if !ok || len(line) < len(proto)+3 || line[:len(proto)] != proto {
		return h, false
	}
	h.status = line[len(proto):]
	code := 0
	for i := 0; i < 3; i++ {
		c := h.status[i]
		if c < '0' || c > '9' {
			return h, false
		}
		code = code*10 + int(c-'0')
	}
	if len(h.status) > 3 && h.status[3] != ' ' {
		return h, false
	}
	// A reason phrase has the bytes of a field value. A bare CR is refused
	// here, as a bare LF is by cutLine: ReadResponse takes an LF as the
	// end of a line, which would hide the field after it (a
	// Transfer-Encoding that frames the body differently).
	if !httpguts.ValidHeaderFieldValue(h.status) {
		return h, false
	}
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return h, false
	}
	h.code = code

	// One line per LF (counted with the byte search, much faster than a
	// search for CRLF); a bare LF ends the fast path below anyway.
	n := strings.Count(rest, "\n")
	h.header = make(http.Header, n)
	values := make([]string, n) // one block for every field's value
	// names are the fields' names so far, for finding a repeated one
	// without a second map lookup per field (heads have a handful).
	var stack [16]string
	names := stack[:0]
	h.length = -1
	for i := 0; rest != ""; i++ {
		line, rest, ok = cutLine(rest)
		if !ok {
			return h, false
		}
		name, value, found := strings.Cut(line, ":")
		if !found || !httpguts.ValidHeaderFieldName(name) {
			return h, false // also a folded line, which starts with a space
		}
		// Checked before trimming, which would take a bare CR off its
		// end: ReadResponse refuses it.
		if !httpguts.ValidHeaderFieldValue(value) {
			return h, false
		}
		value = textproto.TrimString(value)
		name = http.CanonicalHeaderKey(name)
		switch name {
		case "Transfer-Encoding", "Connection", "Trailer":
			return h, false
		case "Content-Length":
			if h.length >= 0 {
				return h, false
			}
			if h.length = parseLength(value); h.length < 0 {
				return h, false
			}
		}
		values[i] = value
		if slices.Contains(names, name) {
			prev := h.header[name]
			h.header[name] = append(prev[:len(prev):len(prev)], value)
			continue
		}
		if len(names) < cap(names) {
			names = append(names, name)
		} else if prev, dup := h.header[name]; dup {
			// Beyond the first 16 names: the map knows.
			h.header[name] = append(prev[:len(prev):len(prev)], value)
			continue
		}
		h.header[name] = values[i : i+1 : i+1]
	}
	return h, h.length >= 0
}

// cutLine cuts the line that s starts with at its CRLF: the line without
// it and the rest. ok is false when s has no LF, or an LF without a CR
// before it (a bare LF, which ReadResponse takes as a line's end).
func cutLine(s string) (line, rest string, ok bool) {
	i := strings.IndexByte(s, '\n')
	if i < 1 || s[i-1] != '\r' {
		return "", "", false
	}
	return s[:i-1], s[i+1:], true
}

// parseLength parses a Content-Length value: 1 to 18 digits, else -1.
func parseLength(v string) int64 {
	if v == "" || len(v) > 18 {
		return -1
	}
	var n int64
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return -1
		}
		n = n*10 + int64(v[i]-'0')
	}
	return n
}

// lengthBody reads a body of a known length from br; io.ErrUnexpectedEOF
// when the connection ends before it.
type lengthBody struct {
	br   *bufio.Reader
	left int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	switch {
	case b.left == 0:
		return n, io.EOF
	case err == io.EOF:
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// Close does nothing: h1Body decides what becomes of the connection.
func (b *lengthBody) Close() error { return nil }
