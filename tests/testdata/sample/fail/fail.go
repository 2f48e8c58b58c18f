// Package fail is a sample package with a failing test.
package fail

// Half halves n, wrongly on purpose.
func Half(n int) int { return n / 3 }
