//go:build !linux

package boot

import "errors"

// Capacity is not known off Linux.
func (f *FileSlots) Capacity(slot Slot) (int64, error) {
	return 0, errors.New("slot capacity: only on Linux")
}
