// Package deltagen generates per-pair deltas on the server, in the background, after a release
// is published: for a product's newest release, from the releases most of its devices run. The
// server cannot sign them (the targets key is offline); `upkeep release deltas --sign` downloads
// each finished patch, checks it by applying it to the signed source image (the result must be
// the signed destination, byte for byte), and only then signs it as a target. A job row records
// the pair, its state and its progress; the patch itself goes to the blob store.
package deltagen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/release"
)

// Job states.
const (
	Queued  = "queued"
	Running = "running"
	Done    = "done"
	Failed  = "failed"
)

// Job is one per-pair delta to generate: from the source release's image to the destination's.
type Job struct {
	ID                     int64
	Product, Version, From string // the destination release and the source version
	Image, Source          string // their images' target names
	ImageSHA256            string
	ImageLength            int64
	SourceSHA256           string
	SourceLength           int64
	Devices                int    // devices running the source when the job was planned
	State                  string // Queued, Running, Done or Failed
	Done                   int64  // destination bytes generated so far
	PatchSHA256            string // the patch in the blob store, once Done
	PatchSHA512            string
	PatchLength            int64
	Error                  string // why it Failed
	CreatedAt, UpdatedAt   time.Time
}

// Target is the delta target name the patch is signed under.
func (j *Job) Target() string { return delta.PatchName(j.Image, j.From) }

// Store persists jobs. Implementations are safe for concurrent use, also across replicas.
type Store interface {
	// AddDeltaJob adds j, created at j.CreatedAt (ID, State and UpdatedAt are set), unless a job for the same
	// destination image and source digest exists; a Failed one is queued again instead. It
	// reports whether a job was queued.
	AddDeltaJob(ctx context.Context, j *Job) (bool, error)
	// ClaimDeltaJob marks the oldest queued job, or a running one not updated since
	// staleBefore (its replica stopped), running, and returns it; nil when there is none.
	ClaimDeltaJob(ctx context.Context, now, staleBefore time.Time) (*Job, error)
	// ProgressDeltaJob records a running job's progress.
	ProgressDeltaJob(ctx context.Context, id, done int64, now time.Time) error
	// FinishDeltaJob stores a claimed job's end: State, Done, the patch fields and Error.
	FinishDeltaJob(ctx context.Context, j *Job) error
	// FindDeltaJobs lists a release's jobs (every release's when version is empty), oldest first.
	FindDeltaJobs(ctx context.Context, product, version string) ([]*Job, error)
}

// Defaults of Service.
const (
	DefaultTop   = 3
	DefaultStale = 10 * time.Minute
	// MaxImage bounds the images generated from: their generation is bounded in memory
	// (delta.Generate), but not in time.
	MaxImage = 8 << 30
)

// Service plans and runs the jobs.
type Service struct {
	Store    Store
	Releases release.Store
	Blobs    release.BlobStore
	// Signed lists the delta targets already signed, so that planning skips their pairs; nil:
	// none are known.
	Signed  func(ctx context.Context) ([]delta.Target, error)
	TempDir string // for the patch being written and a source not on a local disk; "": os.TempDir
	Now     func() time.Time
	Logger  *slog.Logger

	mu sync.Mutex // one generation at a time in this process: its memory is the bound
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Service) logger() *slog.Logger { return cmp.Or(s.Logger, slog.Default()) }

// Plan queues the per-pair deltas to product@version from the top releases (DefaultTop when
// top <= 0) that at least minDevices of the product's devices run (at least 1), skipping pairs
// that already have a job or a signed delta. It returns the release's jobs.
func (s *Service) Plan(ctx context.Context, product, version string, top, minDevices int) ([]*Job, error) {
	top, minDevices = cmp.Or(max(top, 0), DefaultTop), max(minDevices, 1)
	dest, err := s.Releases.FindRelease(ctx, product, version)
	if err != nil {
		return nil, err
	}
	rels, err := s.Releases.FindReleases(ctx, release.Filter{Product: product})
	if err != nil {
		return nil, err
	}
	running, err := s.Releases.CountRunning(ctx, product)
	if err != nil {
		return nil, err
	}
	signed := map[string]bool{}
	if s.Signed != nil {
		ds, err := s.Signed(ctx)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			signed[d.Name] = true
		}
	}
	slices.SortFunc(rels, func(a, b *release.Release) int {
		return cmp.Or(running[b.Target]-running[a.Target], strings.Compare(a.Version, b.Version))
	})
	n := 0
	for _, r := range rels {
		if n == top || running[r.Target] < minDevices {
			break
		}
		if r.Version == version || r.SHA256 == dest.SHA256 || signed[delta.PatchName(dest.Target, r.Version)] {
			continue
		}
		n++
		if r.Length > MaxImage || dest.Length > MaxImage {
			continue
		}
		j := &Job{Product: product, Version: version, From: r.Version, Image: dest.Target, Source: r.Target,
			ImageSHA256: dest.SHA256, ImageLength: dest.Length, SourceSHA256: r.SHA256, SourceLength: r.Length,
			Devices: running[r.Target], CreatedAt: s.now()}
		if _, err := s.Store.AddDeltaJob(ctx, j); err != nil {
			return nil, err
		}
	}
	return s.Store.FindDeltaJobs(ctx, product, version)
}

// PlanLatest plans deltas to each product's newest release (by security version, then
// publication): the server's background job after a publication.
func (s *Service) PlanLatest(ctx context.Context) error {
	rels, err := s.Releases.FindReleases(ctx, release.Filter{})
	if err != nil {
		return err
	}
	newest := map[string]*release.Release{}
	for _, r := range rels {
		if cur := newest[r.Product]; cur == nil || release.Compare(cur, r) < 0 {
			newest[r.Product] = r
		}
	}
	var errs []error
	for _, p := range slices.Sorted(maps.Keys(newest)) {
		if _, err := s.Plan(ctx, p, newest[p].Version, 0, 1); err != nil {
			errs = append(errs, fmt.Errorf("plan deltas to %s: %w", newest[p].Ref(), err))
		}
	}
	return errors.Join(errs...)
}

// RunOne claims a job and generates its patch into the blob store. It reports whether there
// was a job. A job that cannot be made (an image missing from the blob store, a generation
// error) ends Failed with the reason; an error is returned only when the store fails.
func (s *Service) RunOne(ctx context.Context) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	j, err := s.Store.ClaimDeltaJob(ctx, now, now.Add(-DefaultStale))
	if err != nil || j == nil {
		return false, err
	}
	start := time.Now()
	if err := s.generate(ctx, j); err != nil {
		if ctx.Err() != nil { // stopping: another replica, or this one restarted, takes it up again
			return true, ctx.Err()
		}
		j.State, j.Error = Failed, err.Error()
		s.logger().Warn("delta generation failed", "product", j.Product, "version", j.Version, "from", j.From, "err", err)
	} else {
		j.State, j.Error = Done, ""
		s.logger().Info("delta generated", "product", j.Product, "version", j.Version, "from", j.From,
			"bytes", j.PatchLength, "image", j.ImageLength, "took", time.Since(start).Round(time.Millisecond))
	}
	j.UpdatedAt = s.now()
	return true, s.Store.FinishDeltaJob(context.WithoutCancel(ctx), j)
}

func (s *Service) generate(ctx context.Context, j *Job) error {
	src, cleanup, err := s.readerAt(ctx, j.SourceSHA256, j.SourceLength)
	if err != nil {
		return fmt.Errorf("source image %s: %w", j.Source, err)
	}
	defer cleanup()
	dst, info, err := s.Blobs.Open(ctx, j.ImageSHA256)
	if err != nil {
		return fmt.Errorf("image %s: %w", j.Image, err)
	}
	defer dst.Close()
	if info.Length != j.ImageLength {
		return fmt.Errorf("image %s: the blob store holds %d bytes, the release %d", j.Image, info.Length, j.ImageLength)
	}
	out, err := os.CreateTemp(s.TempDir, "upkeep-delta-*")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	var last time.Time
	progress := func(done int64) {
		j.Done = done
		if now := time.Now(); now.Sub(last) >= time.Second {
			last = now
			if err := s.Store.ProgressDeltaJob(ctx, j.ID, done, s.now()); err != nil {
				s.logger().Warn("delta progress", "err", err)
			}
		}
	}
	if _, err := delta.Generate(ctx, src, j.SourceLength, dst, j.ImageLength, out, delta.GenOptions{Progress: progress}); err != nil {
		return err
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return err
	}
	blob, err := s.Blobs.Put(ctx, out, 1<<62, "")
	if err != nil {
		return fmt.Errorf("store the patch: %w", err)
	}
	j.Done, j.PatchSHA256, j.PatchSHA512, j.PatchLength = j.ImageLength, blob.SHA256, blob.SHA512, blob.Length
	return nil
}

// readerAt gives random access to a blob: the store's own file when it is one, else a copy in
// TempDir.
func (s *Service) readerAt(ctx context.Context, sha string, length int64) (io.ReaderAt, func(), error) {
	r, info, err := s.Blobs.Open(ctx, sha)
	if err != nil {
		return nil, nil, err
	}
	if info.Length != length {
		r.Close()
		return nil, nil, apperr.E(apperr.Verification, "the blob store holds %d bytes, the release %d", info.Length, length)
	}
	if ra, ok := r.(io.ReaderAt); ok {
		return ra, func() { r.Close() }, nil
	}
	defer r.Close()
	f, err := os.CreateTemp(s.TempDir, "upkeep-delta-source-*")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	if n, err := io.Copy(f, io.LimitReader(r, length+1)); err != nil || n != length {
		cleanup()
		return nil, nil, fmt.Errorf("copy %d of %d bytes: %v", n, length, err)
	}
	return f, cleanup, nil
}

// Jobs lists a release's jobs.
func (s *Service) Jobs(ctx context.Context, product, version string) ([]*Job, error) {
	return s.Store.FindDeltaJobs(ctx, product, version)
}
