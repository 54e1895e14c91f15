// Package groupname is the rule for connector group names, shared by the
// gateway config (apps[].group, tunnel.tokens[].group) and the admin API
// (POST /api/v1/tokens), so that every group an app names can be given
// enrollment tokens.
package groupname

// MaxLen is the longest group name.
const MaxLen = 64

// Rule says what Valid accepts, for error messages.
const Rule = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"

// Valid reports whether s is a connector group name: 1 to MaxLen ASCII
// letters, digits, '.', '_' or '-', the first a letter or digit.
func Valid(s string) bool {
	if len(s) == 0 || len(s) > MaxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}
