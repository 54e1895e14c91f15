// Package htmlpage escapes the values that Sallyport's few HTML pages (the
// gateway's error page, pre-authentication's sign-out pages, the
// development sign-in page, the demo app) put into their markup.
//
// Why not html/template: executing a template calls methods by a name
// known only at run time, and one such call makes the linker keep every
// exported method of every type in the binary: 5.2 MB more binary and
// about 2.3 MiB more resident memory at rest in every process (the
// gateway, the agent and the benchmark's processes run the one binary). The pages are
// small and fixed, so each is written by hand with these two functions,
// which cover the only contexts the pages use: text and quoted attribute
// values (Text), and URLs in href and action attributes (URL). Text
// writes what html/template writes in those contexts; URL filters the
// same schemes as html/template, but leaves the URL's characters as they
// are where html/template percent-encodes some (a space, a quote): they
// are escaped for the attribute, and browsers read both forms the same.
package htmlpage

import "strings"

var textEscaper = strings.NewReplacer(
	"&", "&amp;",
	"<", "&lt;",
	">", "&gt;",
	`"`, "&#34;",
	"'", "&#39;",
	"+", "&#43;", // as html/template: a page read as UTF-7 starts escapes with +
	"\x00", "\uFFFD",
)

// Text escapes s for an HTML text node or a quoted attribute value: the
// characters that could end either (and +) are written as entities, as
// html/template writes them, and NUL as U+FFFD.
func Text(s string) string { return textEscaper.Replace(s) }

// Filtered is what URL writes instead of a URL whose scheme is not safe to
// follow (html/template writes the same).
const Filtered = "#ZgotmplZ"

// URL escapes s for a quoted href or action attribute. A URL with a scheme
// other than http, https or mailto (javascript:, data:, vbscript:, any
// spelling of them a browser would still read) becomes Filtered; relative
// URLs are kept.
func URL(s string) string {
	if scheme, _, ok := strings.Cut(s, ":"); ok && !strings.Contains(scheme, "/") {
		switch strings.ToLower(scheme) {
		case "http", "https", "mailto":
		default:
			return Filtered
		}
	}
	return Text(s)
}
