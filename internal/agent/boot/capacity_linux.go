//go:build linux

package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Capacity is how many bytes an image written to slot may take: for slots that are files owned
// by FileSlots, the free space of their file system plus what the slot's current file holds
// (Create truncates it); for a device or caller-owned file, its size.
func (f *FileSlots) Capacity(slot Slot) (int64, error) {
	p, err := f.path(slot)
	if err != nil {
		return 0, err
	}
	var cur int64
	if fh, err := os.Open(p); err == nil {
		cur, err = fh.Seek(0, 2) // a block device reports its size at its end, as a file does
		fh.Close()
		if err != nil {
			return 0, fmt.Errorf("slot %s size: %w", slot, err)
		}
		if !f.owned {
			return cur, nil
		}
	} else if !f.owned {
		return 0, fmt.Errorf("slot %s: %w", slot, err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(p), &st); err != nil {
		return 0, fmt.Errorf("slot %s free space: %w", slot, err)
	}
	return int64(st.Bavail)*int64(st.Bsize) + cur, nil
}
