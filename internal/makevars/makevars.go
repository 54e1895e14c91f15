// Package makevars reads the simple variables of the repository's Makefile
// (`NAME := value` lines), for the tests that must build the binaries as
// `make build` does: the build tags are set there once.
package makevars

import (
	"fmt"
	"os"
	"strings"
)

// Read returns the `NAME := value` variables of the Makefile at path, with
// each $(NAME) reference to a variable set on an earlier such line
// expanded. Recipe lines, comments and other assignments are skipped.
func Read(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":=")
		if !ok || strings.ContainsAny(k, "\t$#") {
			continue
		}
		v = strings.TrimSpace(v)
		for ref, val := range vars {
			v = strings.ReplaceAll(v, "$("+ref+")", val)
		}
		vars[strings.TrimSpace(k)] = v
	}
	return vars, nil
}

// Get returns the variable name of the Makefile at path (see Read), or an
// error that says which file lacks it.
func Get(path, name string) (string, error) {
	vars, err := Read(path)
	if err != nil {
		return "", err
	}
	v, ok := vars[name]
	if !ok {
		return "", fmt.Errorf("%s sets no %s (a `%s := value` line)", path, name, name)
	}
	return v, nil
}
