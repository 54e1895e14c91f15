package gateway

import (
	"math"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Normal forms and best fit: a path with non-ASCII letters may name
// another app's prefix in another Unicode form.
//
//   - Canonical (formNFC): macOS file systems (APFS, HFS+) and some
//     frameworks take a letter and its decomposition as one name:
//     "/a\u0308rzte/x" (a and U+0308 COMBINING DIAERESIS) is "/ärzte/x",
//     and a prefix written decomposed is reached by a composed path. The
//     path and the prefix are compared in NFC.
//   - Compatibility (formNFKC, formBestFit): Windows' "best fit" for
//     programs that read paths in a code page (CGI, PHP, ANSI Win32 calls)
//     reads a fullwidth letter as its ASCII one and drops the diacritics of
//     a letter the code page lacks: "/ａdmin" (U+FF41) and "/ādmin" are
//     "/admin" there, and so are "/ađmin" and "/αdmin" (its tables map some
//     letters without a decomposition, bestFitASCII). The path is read in
//     NFKC, and in NFKD without its non-spacing marks (unicode.Mn) and with
//     bestFitASCII's letters, then NFC; the prefix only in NFC. Only
//     the path is simplified: no backend reads "/arzte" as "/ärzte", so an
//     ASCII path never meets an app at "/ärzte" this way.
//
// Each reading is compared with the prefixes ignoring case (foldedPrefix).
// A prefix that rt's prefix reads as (or is in NFC, but for case) does not
// count: two apps at "/ärzte" composed and decomposed, or at "/ä" and "/a",
// both stay reachable. Refusing a look-alike costs nothing: no app links to
// "/ａdmin".

// pathForms are the rewrites of formsElsewhere: formNFC, formNFKC and
// formBestFit.
var pathForms = [...]rewrite{formNFC, formNFKC, formBestFit}

// formsElsewhere reports whether a reading of a path in another Unicode
// form (pathForms) is routed to another app than rt. read(k1) returns the
// reading of the path to read (the path as matched, or one of
// backendReadsElsewhere's) up to k1 bytes or more, and whether that is all
// of it; k is readingLimit(host). It also returns how many leading bytes
// of that reading decided the answer (a prefix of it): a reading that
// starts with the same ones (one of seen, readings answered before) has
// the same answer, and is not read in the forms again.
func (r *Router) formsElsewhere(host string, rt *Route, k int, read func(k1 int) (string, bool), seen []string) (bool, string) {
	// The forms share what read returned: a longer one does as well.
	var t string
	whole, got := false, 0
	shared := func(k1 int) (string, bool) {
		if k1 > got && !whole {
			t, whole = read(k1)
			got = k1
		}
		return t, whole
	}
	if len(seen) > 0 {
		t, _ := shared(2 * min(k, math.MaxInt/4))
		for _, p := range seen {
			if strings.HasPrefix(t, p) {
				return false, ""
			}
		}
	}
	decided := 0
	for i, form := range pathForms {
		b, j := formReading(form, k, shared)
		if r.formIn(host, string(b), rt, i) {
			return true, ""
		}
		decided = max(decided, j+utf8.UTFMax)
	}
	if decided > len(t) {
		return false, "" // read to its end: what follows may change it
	}
	return false, t[:decided]
}

// formReading returns the first k bytes of form's reading of what read
// returns, and how much of that it read. A form may drop any number of
// bytes (a letter followed by a thousand combining marks is the letter in
// formBestFit), so what read returns is read again with twice as many
// bytes while those were not enough for k bytes of the form's own and its
// last segment may go on (a segment ends before a character whose
// utf8.UTFMax bytes are in view).
func formReading(form rewrite, k int, read func(k1 int) (string, bool)) ([]byte, int) {
	for k1 := 2 * min(k, math.MaxInt/4); ; k1 = 2 * min(k1, math.MaxInt/4) {
		t, whole := read(k1)
		b, j := form(nil, t, k)
		if whole || len(b) >= k && j+utf8.UTFMax <= len(t) {
			return b, j
		}
	}
}

// formIn reports whether path, the first bytes of a reading in
// pathForms[form], is routed to another app than rt: whether it starts
// with another app's prefix in NFC (but for case) up to a "/" or its end,
// which does not read as rt's (see above), and whether that path written
// with the prefix as configured is routed there (a longer prefix may take
// it first).
func (r *Router) formIn(host, path string, rt *Route, form int) bool {
	own := r.forms[rt]
	for _, list := range r.hostRoutes(host) {
		for _, o := range list {
			p := o.PathPrefix
			if o == rt || p == "/" {
				continue
			}
			np := r.forms[o].nfc
			n, ok := foldedPrefix(path, np)
			if !ok || n < len(path) && path[n] != '/' {
				continue
			}
			if own.nfc != "/" && (foldsTo(np, own.nfc) || foldsTo(own.read[form], np)) {
				continue // o differs from rt only in form and case
			}
			if r.Match(host, p+path[n:]) == o {
				return true
			}
		}
	}
	return false
}

// prefixForms is what the readings in other forms need of a route's
// path_prefix, worked out once by NewRouter rather than per request.
type prefixForms struct {
	nfc  string                 // the prefix in NFC (itself, almost always)
	read [len(pathForms)]string // nfc as each of pathForms reads it
}

func newPrefixForms(prefix string) prefixForms {
	f := prefixForms{nfc: norm.NFC.String(prefix)}
	for i, form := range pathForms {
		f.read[i] = wholeReading(form, f.nfc)
	}
	return f
}

// wholeReading is all of rw's reading of s.
func wholeReading(rw rewrite, s string) string {
	b, _ := rw(nil, s, math.MaxInt)
	return string(b)
}

// nonASCII reports whether s holds a byte from 0x80 on.
func nonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// formNFC is the rewrite of the path in NFC.
func formNFC(b []byte, s string, limit int) ([]byte, int) {
	return appendForm(b, s, limit, norm.NFC)
}

// formNFKC is the rewrite of the path in NFKC.
func formNFKC(b []byte, s string, limit int) ([]byte, int) {
	return appendForm(b, s, limit, norm.NFKC)
}

// formBestFit is the rewrite of the path in NFKD without its non-spacing
// marks, then NFC (which composes Hangul jamo again, and a few spacing
// marks). The first part (appendSimplified) is written up to a few bytes
// past limit, and composed up to its last boundary (norm.Form.LastBoundary:
// what follows may compose with the letter before it); while that makes
// less than limit bytes (NFC makes at most three bytes one), twice as many.
func formBestFit(b []byte, s string, limit int) ([]byte, int) {
	for m := min(limit, math.MaxInt/4) + 3*utf8.UTFMax; ; m = 2 * min(m, math.MaxInt/4) {
		t, i := appendSimplified(nil, s, m)
		if i < len(s) {
			if lb := norm.NFC.LastBoundary(t); lb >= 0 {
				t = t[:lb]
			}
		}
		if norm.NFC.QuickSpan(t) < len(t) {
			t = norm.NFC.Append(nil, t...)
		}
		if len(t) >= limit || i == len(s) {
			t = t[:min(len(t), limit)]
			if b == nil {
				return t, i
			}
			return append(b, t...), i
		}
	}
}

// appendSimplified appends s to b, each character as its compatibility
// decomposition (NFKD's, from its table: a letter at a time, which differs
// from NFKD only in the order of the combining marks of a letter, and
// they are dropped) without its non-spacing marks, or as the ASCII
// character best fit makes of it (bestFitASCII), up to limit bytes, and
// returns it and how much of s it read. A Hangul syllable stays (NFC
// composes it again). Bytes that are not UTF-8 stay.
func appendSimplified(b []byte, s string, limit int) ([]byte, int) {
	if b == nil {
		b = make([]byte, 0, min(limit, len(s))+norm.MaxSegmentSize)
	}
	start, i := len(b), 0
	for i < len(s) && len(b)-start < limit {
		if c := s[i]; c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if r, n := utf8.DecodeRuneInString(s[i:]); bestFitLow <= r && r <= bestFitHigh {
			if c, ok := bestFitASCII[r]; ok {
				b = append(b, c)
				i += n
				continue
			}
		}
		p := norm.NFKD.PropertiesString(s[i:])
		if d := p.Decomposition(); d != nil {
			b = appendDropping(b, d)
		} else {
			b = appendDropping(b, s[i:i+p.Size()])
		}
		i += p.Size()
	}
	return b, i
}

// appendForm appends s in form f to b, up to limit bytes, and returns it and how much of s it
// read: up to a boundary (a character that starts a segment and combines
// with nothing before it) that it saw whole. What is in f already
// (norm.Form.QuickSpanString of the first bytes) is copied; from the last
// boundary in it, the rest is written segment by segment (norm.Iter), up
// to the one that makes limit bytes. Bytes that are not UTF-8 stay.
func appendForm(b []byte, s string, limit int, f norm.Form) ([]byte, int) {
	start := len(b)
	if b == nil {
		b = make([]byte, 0, min(limit, len(s))+norm.MaxSegmentSize)
	}
	piece := s // a few bytes past limit: the span is read up to a boundary after them
	if len(s)-4*utf8.UTFMax > limit {
		piece = s[:limit+4*utf8.UTFMax]
	}
	n := f.QuickSpanString(piece)
	at, out := 0, len(b) // the last boundary in s[:n], and len(b) there
	for i := 0; i < n; {
		if s[i] < utf8.RuneSelf || f.PropertiesString(s[i:]).BoundaryBefore() {
			if len(b)-start >= limit {
				return b[:start+limit], i
			}
			at, out = i, len(b)
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		b = append(b, s[i:i+size]...)
		i += size
	}
	if n == len(s) {
		return b[:min(len(b), start+limit)], n
	}
	b = b[:out]
	it := iterPool.Get().(*norm.Iter)
	defer iterPool.Put(it)
	*it = norm.Iter{} // Init leaves some of the last use
	it.InitString(f, s[at:])
	for !it.Done() && len(b)-start < limit {
		b = append(b, it.Next()...)
	}
	return b[:min(len(b), start+limit)], at + it.Pos()
}

// iterPool holds norm.Iters (736 bytes each, and they escape).
var iterPool = sync.Pool{New: func() any { return new(norm.Iter) }}

// appendDropping appends s to b without its non-spacing marks.
func appendDropping[T string | []byte](b []byte, s T) []byte {
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			b = append(b, s[i])
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r < 0x300 || !unicode.Is(unicode.Mn, r) { // none below U+0300
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return b
}
