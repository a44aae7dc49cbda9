package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Slots holds the two A/B image slots.
//
// Implementations must be safe for concurrent use on different slots. Callers must not
// write a slot while another writer or reader of the same slot is open, and must never write
// the booted slot. Every method returns ctx.Err() (possibly wrapped) if ctx is done before
// it starts and an error for an invalid slot.
type Slots interface {
	// Create truncates slot and returns a writer for a new image; Close fsyncs. Abort via
	// the returned value's Abort().
	Create(ctx context.Context, slot Slot) (SlotWriter, error)
	// Resume reopens slot for writing at offset, keeping the first offset bytes (an interrupted
	// download continues there). Bytes past offset are discarded for a regular file.
	Resume(ctx context.Context, slot Slot, offset int64) (SlotWriter, error)
	// Open reads the image in slot. Returns an error wrapping fs.ErrNotExist if the slot was
	// never written.
	Open(ctx context.Context, slot Slot) (io.ReadCloser, error)
}

// SlotWriter receives a new image for a slot. It is not safe for concurrent use.
type SlotWriter interface {
	io.Writer
	// Sync flushes what was written so far to stable storage, so that a resumed download can
	// trust it.
	Sync() error
	// Close flushes the image to stable storage (fsync) and closes the slot. The image is
	// complete only if Close returns nil.
	Close() error
	// Abort closes the slot without completing the image; the slot then holds no usable
	// image. Abort after a successful Close is a no-op, so it can be deferred.
	Abort() error
}

// FileSlots keeps slots as files dir/slot-a.img and dir/slot-b.img (file-backed slots for the
// simulator and for raw image files), or, from NewDeviceSlots, as two explicit paths.
//
// Writes go straight into the slot file (a raw partition has no rename), so the inactive slot
// may hold a partial image after a crash; that is fine because it is never booted without a
// committed trial. FileSlots implements Slots and is safe for concurrent use under its rules.
type FileSlots struct {
	a, b string
	// owned is true when the slot files belong to FileSlots (NewFileSlots): an aborted image
	// is then removed so that Open reports fs.ErrNotExist.
	owned bool
}

var _ Slots = (*FileSlots)(nil)

// NewFileSlots keeps the slots in dir, which it creates (mode 0700) if missing.
func NewFileSlots(dir string) (*FileSlots, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("slot dir: %w", err)
	}
	return &FileSlots{a: filepath.Join(dir, "slot-a.img"), b: filepath.Join(dir, "slot-b.img"), owned: true}, nil
}

// NewDeviceSlots uses the raw block devices or files pathA and pathB as the slots. A device
// is written in place without truncation (block devices can't be truncated), so it keeps
// stale bytes past the end of a shorter image and Open reads the whole device: callers must
// bound reads by the image length they expect. A regular file is truncated (or created) by
// Create. A device always exists, so Open cannot tell a never-written device slot.
func NewDeviceSlots(pathA, pathB string) *FileSlots {
	return &FileSlots{a: pathA, b: pathB}
}

func (f *FileSlots) path(slot Slot) (string, error) {
	switch slot {
	case SlotA:
		return f.a, nil
	case SlotB:
		return f.b, nil
	}
	return "", checkSlot(slot)
}

// Create implements Slots.
func (f *FileSlots) Create(ctx context.Context, slot Slot) (SlotWriter, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create slot: %w", err)
	}
	path, err := f.path(slot)
	if err != nil {
		return nil, fmt.Errorf("create slot: %w", err)
	}
	device := false
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeDevice != 0 {
		device = true
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if device {
		flags = os.O_WRONLY
	}
	file, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create slot %s: %w", slot, err)
	}
	return &slotWriter{f: file, slot: slot, device: device, remove: f.owned && !device}, nil
}

// Resume implements Slots.
func (f *FileSlots) Resume(ctx context.Context, slot Slot, offset int64) (SlotWriter, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("resume slot: %w", err)
	}
	path, err := f.path(slot)
	if err != nil {
		return nil, fmt.Errorf("resume slot: %w", err)
	}
	device := false
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeDevice != 0 {
		device = true
	}
	file, err := os.OpenFile(path, os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("resume slot %s: %w", slot, err)
	}
	if !device {
		if err := file.Truncate(offset); err != nil {
			file.Close()
			return nil, fmt.Errorf("resume slot %s: %w", slot, err)
		}
	}
	if _, err := file.Seek(offset, io.SeekStart); err != nil {
		file.Close()
		return nil, fmt.Errorf("resume slot %s: %w", slot, err)
	}
	return &slotWriter{f: file, slot: slot, device: device, remove: f.owned && !device}, nil
}

// Open implements Slots.
func (f *FileSlots) Open(ctx context.Context, slot Slot) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open slot: %w", err)
	}
	path, err := f.path(slot)
	if err != nil {
		return nil, fmt.Errorf("open slot: %w", err)
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open slot %s: %w", slot, err)
	}
	return file, nil
}

// slotWriter writes an image into a slot file or device.
type slotWriter struct {
	f      *os.File
	slot   Slot
	device bool // a device: no folder entry to sync, and some devices cannot fsync
	remove bool // remove the file on Abort
	done   bool // the file is closed (Close or Abort has run)
	ok     bool // Close succeeded: the image is complete
}

func (w *slotWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("write slot %s: %w", w.slot, os.ErrClosed)
	}
	n, err := w.f.Write(p)
	if err != nil {
		return n, fmt.Errorf("write slot %s: %w", w.slot, err)
	}
	return n, nil
}

func (w *slotWriter) Sync() error {
	if w.done {
		return fmt.Errorf("sync slot %s: %w", w.slot, os.ErrClosed)
	}
	if err := w.f.Sync(); err != nil && !(w.device && errors.Is(err, syscall.EINVAL)) {
		return fmt.Errorf("sync slot %s: %w", w.slot, err)
	}
	return nil
}

func (w *slotWriter) Close() error {
	if w.done {
		return fmt.Errorf("close slot %s: %w", w.slot, os.ErrClosed)
	}
	w.done = true
	err := w.f.Sync()
	if w.device && errors.Is(err, syscall.EINVAL) {
		err = nil // a device without fsync support (e.g. a character device) has nothing to flush
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil && !w.device {
		err = SyncDir(filepath.Dir(w.f.Name())) // make a newly created file's entry durable
	}
	if err != nil {
		return fmt.Errorf("close slot %s: %w", w.slot, err)
	}
	w.ok = true
	return nil
}

func (w *slotWriter) Abort() error {
	if w.ok {
		return nil
	}
	var err error
	if !w.done {
		w.done = true
		err = w.f.Close()
	}
	if w.remove {
		if rerr := os.Remove(w.f.Name()); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("abort slot %s: %w", w.slot, err)
	}
	return nil
}
