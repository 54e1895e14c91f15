// Package logging builds the process's zap logger from the common
// --log-level and --log-format flags.
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Levels and Formats are the accepted flag values, in the order help text
// should list them.
var (
	Levels  = []string{"debug", "info", "warn", "error"}
	Formats = []string{"console", "json"}
)

// New returns a logger that writes to standard error. level is debug, info,
// warn or error (empty means info); format is console or json (empty means
// console). Times are ISO 8601. Values are case-insensitive; anything else
// is an error that lists the allowed values. flush is --log-flush-interval:
// a line that comes within flush of the last write waits, at most that
// long, to go out with the lines after it (see flushWriter); 0 writes each
// line at once; negative is an error. Sync writes what waits.
func New(level, format string, flush time.Duration) (*zap.Logger, error) {
	return build(os.Stderr, level, format, flush)
}

// build is New writing to w, for tests.
func build(w io.Writer, level, format string, flush time.Duration) (*zap.Logger, error) {
	lvl, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	enc, err := newEncoder(format)
	if err != nil {
		return nil, err
	}
	if flush < 0 {
		return nil, fmt.Errorf("--log-flush-interval %v: must be 0 (each line at once) or a positive duration such as 100ms", flush)
	}
	if flush == 0 {
		sink := zapcore.Lock(zapcore.AddSync(w))
		return zap.New(zapcore.NewCore(enc, sink, lvl), zap.AddCaller(), zap.ErrorOutput(sink)), nil
	}
	fw := newFlushWriter(w, flush)
	core := &flushCore{Core: zapcore.NewCore(enc, fw, lvl), fw: fw}
	return zap.New(core, zap.AddCaller(), zap.ErrorOutput(fw)), nil
}

func parseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return zapcore.InfoLevel, nil
	case "debug":
		return zapcore.DebugLevel, nil
	case "warn":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("log level %q: must be one of %s", s, strings.Join(Levels, ", "))
}

func newEncoder(format string) (zapcore.Encoder, error) {
	switch strings.ToLower(format) {
	case "", "console":
		cfg := zap.NewDevelopmentEncoderConfig()
		cfg.EncodeTime = zapcore.ISO8601TimeEncoder
		return zapcore.NewConsoleEncoder(cfg), nil
	case "json":
		cfg := zap.NewProductionEncoderConfig()
		cfg.TimeKey = "time"
		cfg.EncodeTime = zapcore.ISO8601TimeEncoder
		return zapcore.NewJSONEncoder(cfg), nil
	}
	return nil, fmt.Errorf("log format %q: must be one of %s", format, strings.Join(Formats, ", "))
}
