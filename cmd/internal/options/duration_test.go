package options

import (
	"errors"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"5", 5 * time.Second, true},
		{"1.5", 1500 * time.Millisecond, true},
		{"0", 0, true},
		{"90s", 90 * time.Second, true},
		{"10m", 10 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"-3", 0, false},
		{"-1s", 0, false},
		{"x", 0, false},
		{"", 0, false},
		{"1e300", 0, false},
		{"5 s", 0, false},
	} {
		got, err := parseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestInUserWords(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`invalid value "x" for flag -timeout: not a duration`, `--timeout "x": not a duration`},
		{`invalid value "x" for flag -vcpus: parse error`, `--vcpus "x": not a number`},
		{`invalid value "a b" for flag -c: bad`, `-c "a b": bad`},
		{`something else`, `something else`},
	} {
		if got := inUserWords(errors.New(tc.in)); got != tc.want {
			t.Errorf("inUserWords(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
