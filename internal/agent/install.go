package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/agent/boot"
)

// Outcome is where a device stands with an installed image after a (possible) reboot.
type Outcome string

// Outcomes.
const (
	OutcomeTrial     Outcome = "trial"     // running the new image, not committed yet
	OutcomeCommitted Outcome = "committed" // the new image is permanent
	OutcomePrevious  Outcome = "previous"  // running the previous image
)

// Stager receives an image being downloaded.
type Stager interface {
	io.Writer
	Sync() error  // make what was written durable (a resumed download trusts it)
	Close() error // sync and close; the bytes stay for Install or a resume
	Abort() error // discard
}

// Installer puts a verified image in place, then commits it or rolls it back. The agent journals
// each step before calling it, and calls it again after a power cut, so every method must be
// idempotent. Not safe for concurrent use.
type Installer interface {
	// Prepare fills in installer-specific fields of img (the A/B slot) before anything is written.
	Prepare(ctx context.Context, img *Image) error
	// Stage opens a writer for img at offset: 0 starts over, more resumes an interrupted download.
	Stage(ctx context.Context, img *Image, offset int64) (Stager, error)
	// ReadStaged reads back the staged bytes (to re-hash them before a download resumes).
	ReadStaged(ctx context.Context, img *Image) (io.ReadCloser, error)
	// Install makes the staged, verified image the one to run, and says if a reboot is needed.
	Install(ctx context.Context, img *Image) (reboot bool, err error)
	// Reboot restarts the device. A simulator returns; real hardware does not.
	Reboot(ctx context.Context) error
	// Outcome says where the device stands with img after Install (and a reboot, if needed).
	Outcome(ctx context.Context, img *Image) (Outcome, error)
	// Commit makes img permanent.
	Commit(ctx context.Context, img *Image) error
	// Rollback returns to the previous image and says if a reboot is needed to finish.
	Rollback(ctx context.Context, img *Image) (reboot bool, err error)
}

// ABInstaller installs raw images into the inactive slot of an A/B pair and trial-boots them
// through the boot loader. Writes stream, so memory use is constant whatever the image size.
type ABInstaller struct {
	Boot  boot.Bootloader
	Slots boot.Slots
}

var _ Installer = (*ABInstaller)(nil)

// Prepare implements Installer: the image goes to the slot that is not running.
func (a *ABInstaller) Prepare(ctx context.Context, img *Image) error {
	st, err := a.Boot.State(ctx)
	if err != nil {
		return fmt.Errorf("boot state: %w", err)
	}
	img.Slot = st.Booted.Other()
	return nil
}

// Stage implements Installer.
func (a *ABInstaller) Stage(ctx context.Context, img *Image, offset int64) (Stager, error) {
	if offset == 0 {
		return a.Slots.Create(ctx, img.Slot)
	}
	return a.Slots.Resume(ctx, img.Slot, offset)
}

// ReadStaged implements Installer.
func (a *ABInstaller) ReadStaged(ctx context.Context, img *Image) (io.ReadCloser, error) {
	return a.Slots.Open(ctx, img.Slot)
}

// Install implements Installer: arm a one-shot trial boot of the new slot.
func (a *ABInstaller) Install(ctx context.Context, img *Image) (bool, error) {
	if err := a.Boot.TryNext(ctx, img.Slot); err != nil {
		return false, fmt.Errorf("arm trial boot of slot %s: %w", img.Slot, err)
	}
	return true, nil
}

// Reboot implements Installer.
func (a *ABInstaller) Reboot(ctx context.Context) error { return a.Boot.Reboot(ctx) }

// Outcome implements Installer.
func (a *ABInstaller) Outcome(ctx context.Context, img *Image) (Outcome, error) {
	st, err := a.Boot.State(ctx)
	if err != nil {
		return "", fmt.Errorf("boot state: %w", err)
	}
	switch {
	case st.Booted == img.Slot && st.Trying:
		return OutcomeTrial, nil
	case st.Booted == img.Slot:
		return OutcomeCommitted, nil
	default:
		return OutcomePrevious, nil
	}
}

// Commit implements Installer.
func (a *ABInstaller) Commit(ctx context.Context, img *Image) error { return a.Boot.Commit(ctx) }

// Rollback implements Installer: disarm the trial; reboot if the trial slot is running.
func (a *ABInstaller) Rollback(ctx context.Context, img *Image) (bool, error) {
	if err := a.Boot.Abort(ctx); err != nil {
		return false, fmt.Errorf("abort trial: %w", err)
	}
	st, err := a.Boot.State(ctx)
	if err != nil {
		return false, fmt.Errorf("boot state: %w", err)
	}
	return st.Booted == img.Slot, nil
}

// FileInstaller replaces one file atomically: the image is staged next to it, the old file is
// kept as a hard link for rollback, and a rename puts the new one in place.
type FileInstaller struct {
	Path string
}

var _ Installer = (*FileInstaller)(nil)

func (f *FileInstaller) staged() string { return f.Path + ".upkeep-new" }
func (f *FileInstaller) backup() string { return f.Path + ".upkeep-old" }

// absent marks a trial of a first install: there was no previous file, so a rollback removes
// the new one.
func (f *FileInstaller) absent() string { return f.Path + ".upkeep-absent" }

// inTrial reports whether a backup or the first-install marker says an install awaits commit.
func (f *FileInstaller) inTrial() bool {
	for _, p := range []string{f.backup(), f.absent()} {
		if _, err := os.Lstat(p); err == nil {
			return true
		}
	}
	return false
}

// Prepare implements Installer.
func (f *FileInstaller) Prepare(ctx context.Context, img *Image) error { return nil }

// Stage implements Installer.
func (f *FileInstaller) Stage(ctx context.Context, img *Image, offset int64) (Stager, error) {
	return stageFile(f.staged(), offset)
}

// ReadStaged implements Installer.
func (f *FileInstaller) ReadStaged(ctx context.Context, img *Image) (io.ReadCloser, error) {
	return os.Open(f.staged())
}

// Install implements Installer.
func (f *FileInstaller) Install(ctx context.Context, img *Image) (bool, error) {
	if _, err := os.Stat(f.staged()); errors.Is(err, fs.ErrNotExist) {
		if sum, _ := fileSHA256(f.Path); sum == img.SHA256 {
			return false, nil // renamed before a power cut
		}
		return false, fmt.Errorf("install %s: staged image is missing", f.Path)
	}
	if !f.inTrial() {
		err := os.Link(f.Path, f.backup())
		if errors.Is(err, fs.ErrNotExist) {
			// No previous file: mark it (durably, before the rename) so that Outcome reports
			// a trial and Rollback removes what this install put in place.
			err = boot.WriteFileAtomic(f.absent(), nil, 0o600)
		}
		if err != nil {
			return false, fmt.Errorf("keep previous %s: %w", f.Path, err)
		}
	}
	if err := os.Rename(f.staged(), f.Path); err != nil {
		return false, fmt.Errorf("install %s: %w", f.Path, err)
	}
	return false, boot.SyncDir(filepath.Dir(f.Path))
}

// Reboot implements Installer; a file install never needs one.
func (f *FileInstaller) Reboot(ctx context.Context) error { return nil }

// Outcome implements Installer.
func (f *FileInstaller) Outcome(ctx context.Context, img *Image) (Outcome, error) {
	sum, err := fileSHA256(f.Path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if sum != img.SHA256 {
		return OutcomePrevious, nil
	}
	if f.inTrial() {
		return OutcomeTrial, nil
	}
	return OutcomeCommitted, nil
}

// Commit implements Installer.
func (f *FileInstaller) Commit(ctx context.Context, img *Image) error {
	for _, p := range []string{f.backup(), f.absent()} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("commit %s: %w", f.Path, err)
		}
	}
	return boot.SyncDir(filepath.Dir(f.Path))
}

// Rollback implements Installer. After a first install (no previous file) it removes the new
// file; the marker goes last, so a power cut in between repeats the removal.
func (f *FileInstaller) Rollback(ctx context.Context, img *Image) (bool, error) {
	os.Remove(f.staged())
	if _, err := os.Lstat(f.backup()); err == nil {
		if err := os.Rename(f.backup(), f.Path); err != nil {
			return false, fmt.Errorf("roll back %s: %w", f.Path, err)
		}
	} else if _, err := os.Lstat(f.absent()); err == nil {
		if err := os.Remove(f.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("roll back %s: %w", f.Path, err)
		}
		if err := boot.SyncDir(filepath.Dir(f.Path)); err != nil {
			return false, err
		}
		if err := os.Remove(f.absent()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("roll back %s: %w", f.Path, err)
		}
	}
	return false, boot.SyncDir(filepath.Dir(f.Path))
}

// ModuleInstaller hands the image to an external update module: an executable called once per
// step as `MODULE STEP`, with the image and its facts in the environment. docs/UPDATE-MODULES.md
// specifies the protocol.
type ModuleInstaller struct {
	Executable string
	WorkDir    string // module's private folder; the image is staged in WorkDir/image
	Timeout    time.Duration
}

var _ Installer = (*ModuleInstaller)(nil)

// Module steps.
const (
	ModuleDownload    = "download"
	ModuleInstall     = "install"
	ModuleNeedsReboot = "needs-reboot"
	ModuleReboot      = "reboot"
	ModuleOutcome     = "outcome"
	ModuleCommit      = "commit"
	ModuleRollback    = "rollback"
)

// errUnsupported is a module's answer (exit code 3) to a step it does not implement.
var errUnsupported = errors.New("step not supported by the module")

func (m *ModuleInstaller) image() string { return filepath.Join(m.WorkDir, "image") }

func (m *ModuleInstaller) run(ctx context.Context, step string, img *Image) (string, error) {
	t := m.Timeout
	if t == 0 {
		t = 30 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	if err := os.MkdirAll(m.WorkDir, 0o700); err != nil {
		return "", fmt.Errorf("update module work dir: %w", err)
	}
	cmd := exec.CommandContext(ctx, m.Executable, step)
	cmd.Dir = m.WorkDir
	cmd.Env = append(os.Environ(), "UPKEEP_STEP="+step, "UPKEEP_IMAGE="+m.image(), "UPKEEP_WORKDIR="+m.WorkDir)
	if img != nil {
		cmd.Env = append(cmd.Env, "UPKEEP_TARGET="+img.Target, "UPKEEP_VERSION="+img.Version, "UPKEEP_SHA256="+img.SHA256)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 {
		return "", errUnsupported
	}
	if err != nil {
		return "", &OutputError{
			Err:    fmt.Errorf("update module %s %s: %w: %.300s", filepath.Base(m.Executable), step, err, strings.TrimSpace(errb.String())),
			Output: Tail(append(append(out.Bytes(), "\n--- stderr ---\n"...), errb.Bytes()...), MaxOutput),
		}
	}
	return strings.TrimSpace(out.String()), nil
}

// Prepare implements Installer.
func (m *ModuleInstaller) Prepare(ctx context.Context, img *Image) error {
	return os.MkdirAll(m.WorkDir, 0o700)
}

// Stage implements Installer.
func (m *ModuleInstaller) Stage(ctx context.Context, img *Image, offset int64) (Stager, error) {
	return stageFile(m.image(), offset)
}

// ReadStaged implements Installer.
func (m *ModuleInstaller) ReadStaged(ctx context.Context, img *Image) (io.ReadCloser, error) {
	return os.Open(m.image())
}

// Install implements Installer: the module's download step (it takes the verified image), then
// its install step, then it is asked whether a reboot is needed.
func (m *ModuleInstaller) Install(ctx context.Context, img *Image) (bool, error) {
	for _, step := range []string{ModuleDownload, ModuleInstall} {
		if _, err := m.run(ctx, step, img); err != nil && !errors.Is(err, errUnsupported) {
			return false, err
		}
	}
	out, err := m.run(ctx, ModuleNeedsReboot, img)
	if errors.Is(err, errUnsupported) {
		return false, nil
	}
	return out == "yes", err
}

// Reboot implements Installer.
func (m *ModuleInstaller) Reboot(ctx context.Context) error {
	_, err := m.run(ctx, ModuleReboot, nil)
	return err
}

// Outcome implements Installer. A module that does not answer is taken to be on trial.
func (m *ModuleInstaller) Outcome(ctx context.Context, img *Image) (Outcome, error) {
	out, err := m.run(ctx, ModuleOutcome, img)
	if errors.Is(err, errUnsupported) {
		return OutcomeTrial, nil
	}
	if err != nil {
		return "", err
	}
	switch o := Outcome(out); o {
	case OutcomeTrial, OutcomeCommitted, OutcomePrevious:
		return o, nil
	}
	return "", fmt.Errorf("update module outcome %q: want trial, committed or previous", out)
}

// Commit implements Installer.
func (m *ModuleInstaller) Commit(ctx context.Context, img *Image) error {
	if _, err := m.run(ctx, ModuleCommit, img); err != nil && !errors.Is(err, errUnsupported) {
		return err
	}
	os.Remove(m.image())
	return nil
}

// Rollback implements Installer.
func (m *ModuleInstaller) Rollback(ctx context.Context, img *Image) (bool, error) {
	if _, err := m.run(ctx, ModuleRollback, img); err != nil && !errors.Is(err, errUnsupported) {
		return false, err
	}
	os.Remove(m.image())
	return false, nil
}

// stageFile opens path for an image at offset, creating it or cutting it back to offset.
type fileStager struct{ f *os.File }

func stageFile(path string, offset int64) (Stager, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	flags := os.O_WRONLY | os.O_CREATE
	if offset == 0 {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	if err := f.Truncate(offset); err != nil {
		f.Close()
		return nil, fmt.Errorf("stage: %w", err)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("stage: %w", err)
	}
	return fileStager{f}, nil
}

func (s fileStager) Write(p []byte) (int, error) { return s.f.Write(p) }
func (s fileStager) Sync() error                 { return s.f.Sync() }
func (s fileStager) Close() error {
	err := s.f.Sync()
	return errors.Join(err, s.f.Close())
}
func (s fileStager) Abort() error {
	s.f.Close()
	return os.Remove(s.f.Name())
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
