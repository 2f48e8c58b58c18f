package main

import "time"

// deviceWait bounds how long the init waits for a device its driver is
// still probing.
const deviceWait = 10 * time.Second

// waitFor calls find every interval until it reports found or fails, and
// gives up with notFound once deadline has passed: devices show up a little
// after their driver loads.
func waitFor[T any](deadline time.Time, interval time.Duration, notFound error, find func() (T, bool, error)) (T, error) {
	for {
		v, found, err := find()
		if err != nil || found {
			return v, err
		}
		if time.Now().After(deadline) {
			return v, notFound
		}
		time.Sleep(interval)
	}
}
