// Package pass is a sample package whose tests pass, run by the go test
// -exec integration test.
package pass

// Double doubles n.
func Double(n int) int { return 2 * n }
