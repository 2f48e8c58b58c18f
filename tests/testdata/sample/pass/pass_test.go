package pass

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDouble(t *testing.T) {
	if got := Double(21); got != 42 {
		t.Errorf("Double(21) = %d, want 42", got)
	}
}

func TestTestdataAndTempDir(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "input.txt"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "copy")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := os.Getenv("SAMPLE_OUT"); out != "" {
		// Written where the caller can check it arrived on the host.
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
