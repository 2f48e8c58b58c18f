package options

import (
	"errors"
	"strconv"
	"time"
)

// duration is a flag value read as timeout(1) reads its: a bare number is
// seconds ("5", "1.5"), or Go's form with a unit ("90s", "10m", "1h30m").
type duration time.Duration

func (d *duration) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

func (d *duration) String() string {
	if d == nil || *d == 0 {
		return ""
	}
	return time.Duration(*d).String()
}

func parseDuration(s string) (time.Duration, error) {
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if secs < 0 || secs > float64(maxDuration/time.Second) {
			return 0, errors.New("out of range")
		}
		return time.Duration(secs * float64(time.Second)), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, errors.New("not a duration: give seconds (5, 1.5) or a number with a unit (90s, 10m, 1h)")
	}
	return v, nil
}

// maxDuration keeps durations far from overflowing time.Duration.
const maxDuration = 100 * 365 * 24 * time.Hour

// durationOf is the value of a duration flag, zero when it was not given.
func durationOf(v any) time.Duration {
	if d, ok := v.(*duration); ok && d != nil {
		return time.Duration(*d)
	}
	return 0
}
