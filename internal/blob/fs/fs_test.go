package fs_test

import (
	"testing"

	"upkeep.dev/upkeep/internal/blob/blobtest"
	"upkeep.dev/upkeep/internal/blob/fs"
)

func TestConformance(t *testing.T) {
	s, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blobtest.Run(t, s)
}
