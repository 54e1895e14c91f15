package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// syntaxHint ends the YAML syntax errors that name a line: yaml.v3 often
// names the line where the construct it was reading began, not the line
// that broke it, and its words ("did not find expected '-' indicator")
// say little to someone editing a config.
const syntaxHint = "(YAML syntax: look at this line and the ones just above it; " +
	"indent with spaces, not tabs; check colons, brackets and quotes)"

// brokenLineBudget bounds the bytes brokenLine parses again (an error path,
// but a config of thousands of lines must not take seconds to refuse).
const brokenLineBudget = 8 << 20

// placeSyntaxError puts e, a syntax error yaml.v3 reported for data, at the
// line that broke the file and adds what to do: a control character or a
// byte that is not UTF-8 is named with its line and column (yaml.v3 names
// neither), a tab in the indentation with its line.
func placeSyntaxError(e *Error, data []byte) *Error {
	switch {
	case strings.HasPrefix(e.Msg, "control characters are not allowed"):
		if line, col, r, invalid, ok := firstBadChar(data); ok && !invalid {
			e.Line = line
			e.Msg = fmt.Sprintf("control character %U at column %d is not allowed: delete it "+
				"(inside double quotes, write it as an escape such as \\x%02X)", r, col, r)
			return e
		}
	case strings.Contains(e.Msg, "UTF-8"):
		if line, col, _, invalid, ok := firstBadChar(data); ok && invalid {
			e.Line = line
			e.Msg = fmt.Sprintf("%s at column %d: the file must be UTF-8 text; save it as UTF-8", e.Msg, col)
			return e
		}
	}
	if l := brokenLine(data); l > 0 {
		e.Line = l
	}
	if strings.Contains(e.Msg, "tab") {
		// The parser names the line where the scalar or mapping it was
		// reading began; the tab is on that line or after it.
		if l, col := firstIndentTab(data, e.Line-1); l > 0 {
			e.Line = l
			e.Msg = fmt.Sprintf("%s: line %d is indented with a tab (column %d)", e.Msg, l, col)
		}
	} else if e.Line > 0 {
		if col := indentTab(lineAt(data, e.Line)); col > 0 {
			e.Msg = fmt.Sprintf("%s: line %d is indented with a tab (column %d)", e.Msg, e.Line, col)
		}
	}
	if e.Line > 0 {
		e.Msg += " " + syntaxHint
	}
	return e
}

// brokenLine is the line from which data stops being YAML for good: the
// first N lines do not parse, the first N-1 do. Found from the end, so that
// a bracket or quote left open on an earlier line (whose prefixes also fail)
// does not count; data must not parse (its last line would be named). 0
// when the budget runs out first.
func brokenLine(data []byte) int {
	line, _ := brokenLineSpent(data)
	return line
}

// brokenLineSpent is brokenLine, and the bytes it parsed again. Every
// prefix at least as long as the line where the parser gave up fails with
// the same error as the whole file: that line is found by halving (a few
// parses, not one per line below it), and the search from the end starts
// there. A 900-line file broken in its middle took 450 parses of
// 10-20 KB each (1.7 s).
func brokenLineSpent(data []byte) (line, spent int) {
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	ends := make([]int, len(lines)+1) // ends[n]: bytes in the first n lines
	for i, l := range lines {
		ends[i+1] = ends[i] + len(l)
	}
	errs := map[int]string{} // parse results by line count, "" when it parses
	parse := func(n int) (msg string, ok bool) {
		if m, seen := errs[n]; seen {
			return m, true
		}
		if spent += ends[n]; spent > brokenLineBudget {
			return "", false
		}
		m := ""
		if err := parseYAML(data[:ends[n]]); err != nil {
			m = err.Error()
		}
		errs[n] = m
		return m, true
	}
	if len(lines) == 0 {
		return 0, 0
	}
	// hi: a line count whose prefix fails as the file without its last
	// line does; lo: one whose prefix does not (0: the empty prefix parses).
	hi, lo := len(lines)-1, 0
	gaveUp, ok := parse(hi)
	if !ok {
		return 0, spent
	}
	if gaveUp == "" {
		return hi + 1, spent
	}
	for step := 1; hi-step > 0; step *= 2 {
		m, ok := parse(hi - step)
		if !ok {
			return 0, spent
		}
		if m != gaveUp {
			lo = hi - step
			break
		}
		hi -= step
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		m, ok := parse(mid)
		if !ok {
			return 0, spent
		}
		if m == gaveUp {
			hi = mid
		} else {
			lo = mid
		}
	}
	for n := hi - 1; n >= 0; n-- {
		m, ok := parse(n)
		if !ok {
			return 0, spent
		}
		if m == "" {
			return n + 1, spent
		}
	}
	return 0, spent
}

// parseYAML is the error of the first document in data that does not
// parse, nil when every one does.
func parseYAML(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// lineAt is the 1-based line l of data without its line break.
func lineAt(data []byte, l int) []byte {
	for i := 1; i < l; i++ {
		j := bytes.IndexByte(data, '\n')
		if j < 0 {
			return nil
		}
		data = data[j+1:]
	}
	if j := bytes.IndexByte(data, '\n'); j >= 0 {
		data = data[:j]
	}
	return bytes.TrimSuffix(data, []byte("\r"))
}

// indentTab is the 1-based column of the first tab in the indentation of
// line, 0 if none; a line of blanks only has no indentation.
func indentTab(line []byte) int {
	for i, c := range line {
		switch c {
		case ' ':
		case '\t':
			if len(bytes.TrimLeft(line, " \t")) == 0 {
				return 0
			}
			return i + 1
		default:
			return 0
		}
	}
	return 0
}

// firstIndentTab is the first line after line from (1-based) indented with
// a tab, and the tab's column; 0, 0 if none.
func firstIndentTab(data []byte, from int) (line, col int) {
	for i, l := range bytes.Split(data, []byte("\n")) {
		if i+1 <= from {
			continue
		}
		if c := indentTab(l); c > 0 {
			return i + 1, c
		}
	}
	return 0, 0
}

// firstBadChar finds the first byte of data that is not UTF-8 (invalid)
// or, before it, the first character YAML does not allow (the set
// yaml.v3's reader checks), with its 1-based line and column (in
// characters).
func firstBadChar(data []byte) (line, col int, r rune, invalid, ok bool) {
	line, col = 1, 0
	for len(data) > 0 {
		c, size := utf8.DecodeRune(data)
		data = data[size:]
		col++
		if c == '\n' {
			line, col = line+1, 0
			continue
		}
		if c == utf8.RuneError && size == 1 {
			return line, col, 0, true, true
		}
		if !yamlAllowed(c) {
			return line, col, c, false, true
		}
	}
	return 0, 0, 0, false, false
}

// yamlAllowed reports whether YAML allows r in a stream: tab, line breaks
// and printable characters.
func yamlAllowed(r rune) bool {
	switch {
	case r == '\t', r == '\n', r == '\r', r >= 0x20 && r <= 0x7E, r == 0x85,
		r >= 0xA0 && r <= 0xD7FF, r >= 0xE000 && r <= 0xFFFD, r >= 0x10000 && r <= 0x10FFFF:
		return true
	}
	return false
}
