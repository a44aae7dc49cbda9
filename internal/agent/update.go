package agent

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/devclient"
	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// Cycle runs one poll: a cheap check-in, and when the director changed (or a day passed, or a
// download is pending) the full Uptane verification followed by the update it calls for.
func (a *Agent) Cycle(ctx context.Context) error {
	defer a.flush(ctx) //nolint:errcheck // events stay queued on failure
	if len(a.state.Outbox) > 0 {
		// Report first (a commit or a rollback from before the last power-on, say): the server
		// then signs this device's view from the image it runs now, so that a delta hint starts
		// from it, before the check-in asks whether the view changed.
		a.flush(ctx) //nolint:errcheck // events stay queued on failure
	}
	tok, err := a.token(ctx)
	var res devclient.CheckinResult
	if err == nil {
		res, err = a.api.Checkin(ctx, tok, a.state.CheckinBody())
	}
	if err != nil {
		var se *ServerError
		if errors.As(err, &se) && se.Status == http.StatusUnauthorized {
			a.state.Token = "" // the next call asks for a fresh one
		}
		return fmt.Errorf("check-in: %w", err)
	}
	if res.Poll > 0 && !a.cfg.FixedPoll {
		// The server's suggestion, within a factor of ten of the configured interval either way.
		a.poll = max(a.cfg.PollInterval/10, min(a.cfg.PollInterval*10, res.Poll))
	}
	a.pollJitter = res.Jitter // bounded by half of poll where it is used (devclient.NextPoll)
	changed := res.Changed
	if !changed && a.state.Phase == PhaseDownloaded {
		return a.resume(ctx) // waiting at the install gate: ask again for consent or the window
	}
	if !changed && a.state.Phase == PhaseIdle && now(a.cfg).Sub(a.state.LastFullCheck) < a.cfg.FullCheckEvery {
		return nil
	}
	return a.Update(ctx)
}

// Update runs the full verification and, if it names a new image, installs it. A download that
// an earlier cycle left unfinished resumes if the director still names the same image.
func (a *Agent) Update(ctx context.Context) error {
	if a.state.Phase != PhaseIdle && a.state.Phase != PhaseDownloading && a.state.Phase != PhaseDownloaded {
		// An install step failed part-way (a boot loader tool, a module): carry the journal on.
		return a.resume(ctx)
	}
	dec, dirVersion, named, err := a.verify(ctx)
	if err != nil {
		var ve *uptane.VerificationError
		if errors.As(err, &ve) {
			a.state.LastError = err.Error()
			if named == "" && a.state.Pending != nil {
				named = a.state.Pending.Target
			}
			// The target the director named, when known, so the server counts the failure
			// against the campaign that assigned it.
			a.event(named, wire.StepVerify, wire.StatusFailed, true, err.Error())
			a.state.LastFullCheck = now(a.cfg) // verified failure: do not hammer, wait for a change
			a.state.DirectorVersion = dirVersion
			if p := a.state.Pending; p != nil && a.state.Phase == PhaseDownloading {
				a.discardPending(ctx, "the assignment no longer verifies")
			}
			if saveErr := a.save(); saveErr != nil {
				return saveErr
			}
		}
		return err
	}
	a.state.DirectorVersion, a.state.LastFullCheck = dirVersion, now(a.cfg)
	if p := a.state.Pending; p != nil && (a.state.Phase == PhaseDownloading || a.state.Phase == PhaseDownloaded) {
		if dec.Noop || dec.Name != p.Target || dec.Info.Hashes["sha256"].String() != p.SHA256 {
			a.discardPending(ctx, "the director now names another image") // superseded before install
		} else {
			p.Install = dec.Install // the policy may have changed: a window waived, consent dropped
			if a.state.Phase == PhaseDownloaded {
				return a.resume(ctx)
			}
			return a.fetchAndInstall(ctx, dec.Info, p)
		}
	}
	if dec.Noop || a.state.Phase != PhaseIdle {
		return a.save()
	}
	sha := dec.Info.Hashes["sha256"].String()
	if dec.Name == a.state.FailedTarget && sha == a.state.FailedSHA256 {
		return a.save() // this image failed here before; wait for the director to name another
	}
	img := &Image{Target: dec.Name, Version: dec.Custom.Version, SecurityVersion: dec.Custom.SecurityVersion, SHA256: sha, Length: dec.Info.Length, Install: dec.Install}
	if err := a.installer.Prepare(ctx, img); err != nil {
		return err
	}
	plan, why := a.planDelta(ctx, a.hint, dec, a.lookup)
	if why != "" {
		a.log.Info("delta not used", "target", dec.Name, "why", why)
		a.event(img.Target, wire.StepDownload, wire.StatusStarted, false, "delta not used: "+why)
	}
	img.Delta = plan
	a.state.Phase, a.state.Pending = PhaseDownloading, img
	a.event(img.Target, wire.StepDownload, wire.StatusStarted, false, "")
	if err := a.save(); err != nil {
		return err
	}
	return a.fetchAndInstall(ctx, dec.Info, img)
}

func (a *Agent) discardPending(ctx context.Context, why string) {
	p := a.state.Pending
	if w, err := a.installer.Stage(ctx, p, 0); err == nil {
		w.Abort()
	}
	a.event(p.Target, wire.StepDownload, wire.StatusFailed, false, "abandoned: "+why)
	a.state.Phase, a.state.Pending = PhaseIdle, nil
}

// verify is Uptane full verification (Uptane Standard 5.4.4.2): refresh the director's metadata
// for this device, refresh the image repository, then apply uptane.Decide. named is the one
// target the verified director metadata names (even when the decision then fails), or "".
func (a *Agent) verify(ctx context.Context) (dec *uptane.Decision, dirVersion int64, named string, err error) {
	dirUp, err := a.updater(ctx, dirMeta, devclient.DirectorPath)
	if err != nil {
		return nil, a.state.DirectorVersion, "", err
	}
	if err := refresh(dirUp, "director"); err != nil {
		return nil, a.state.DirectorVersion, "", err
	}
	dirTargets := dirUp.GetTrustedMetadataSet().Targets[metadata.TARGETS]
	dirVersion = dirTargets.Signed.Version
	if len(dirTargets.Signed.Targets) == 1 {
		for name := range dirTargets.Signed.Targets {
			if tuf.ValidTargetName(name) == nil {
				named = name
			}
		}
	}
	if err := a.noticeFrom(ctx, &dirTargets.Signed); err != nil {
		return nil, dirVersion, named, err
	}
	imgUp, err := a.updater(ctx, imageMeta, devclient.ImagePath)
	if err != nil {
		return nil, dirVersion, named, err
	}
	if err := refresh(imgUp, "image repository"); err != nil {
		return nil, dirVersion, named, err
	}
	a.hint, a.lookup = nil, nil
	if named != "" {
		a.hint = directorHint(dirTargets.Signed.Targets[named])
	}
	a.lookup = func(name string) (*metadata.TargetFiles, error) { return TargetInfo(imgUp, name) }
	id := a.state.Identity
	inst := a.state.Installed
	dec, err = uptane.Decide(a.state.DeviceID, id.HardwareID, id.Product, uptane.Installed{Target: inst.Target, SHA256: inst.SHA256, SecurityVersion: inst.SecurityVersion},
		dirTargets.Signed.Targets, a.lookup)
	if err == nil && dec.Info != nil && dec.Info.Custom != nil {
		// A delta target is signed like an image but is not one: the director may hint at it,
		// never name it as the image to install.
		if b, berr := delta.ParseBinding(*dec.Info.Custom); b != nil || berr != nil {
			return nil, dirVersion, named, &uptane.VerificationError{Reason: uptane.ReasonBadCustom, Msg: fmt.Sprintf("target %s is a delta, not an image", dec.Name)}
		}
	}
	return dec, dirVersion, named, err
}

// refresh runs a TUF refresh and classifies its failure: network trouble is transient, anything
// else is a verification failure whose Reason is the precise one (uptane.MetadataError: a replayed
// timestamp is a version rollback, a frozen one expired, a forged one short of its threshold),
// wrapping go-tuf's typed error.
func refresh(up *updater.Updater, what string) error {
	return classifyRefresh(what, tuf.Guard(what, up.Refresh))
}

// classifyRefresh is refresh's classification of a failed refresh of what; nil stays nil.
func classifyRefresh(what string, err error) error {
	if err == nil {
		return nil
	}
	var te *TransientError
	var dl *metadata.ErrDownloadHTTP
	if errors.As(err, &te) || errors.As(err, &dl) {
		// Keep the server's Retry-After (429/503 on a metadata file): Run waits at least that.
		var retry time.Duration
		if te != nil {
			retry = te.RetryAfter
		}
		return &TransientError{Err: fmt.Errorf("refresh %s: %w", what, err), RetryAfter: retry}
	}
	return uptane.MetadataError(what, err)
}

func (a *Agent) updater(ctx context.Context, name, path string) (*updater.Updater, error) {
	return NewUpdater(ctx, TUFOptions{MetadataURL: a.api.Base + path, MetadataDir: filepath.Join(a.cfg.StateDir, name), client: a.api, token: a.token, Now: a.cfg.Now})
}

// fetchAndInstall downloads img (resuming from what is staged), then installs it. A transient
// failure leaves the journal at "downloading" so the next cycle resumes; a verification failure
// is fatal for this image.
func (a *Agent) fetchAndInstall(ctx context.Context, tf *metadata.TargetFiles, img *Image) error {
	for {
		err := a.download(ctx, tf, img)
		if err == nil {
			break
		}
		var ve *uptane.VerificationError
		if !errors.As(err, &ve) {
			a.event(img.Target, wire.StepDownload, wire.StatusFailed, false, err.Error()+"; will resume")
			if saveErr := a.save(); saveErr != nil {
				return saveErr
			}
			return err
		}
		var mm *mismatchError
		if errors.As(err, &mm) && img.HashFailures+1 < maxHashAttempts {
			// A complete image whose hash differs: one flipped bit on a bad link looks the same
			// as tampering, so the stage is discarded and the image fetched again from byte 0.
			// Only maxHashAttempts mismatches in a row (counted in the journal) make it fatal.
			// More bytes than signed stays fatal at once (fetchRange).
			img.HashFailures++
			if w, serr := a.installer.Stage(ctx, img, 0); serr == nil {
				w.Abort() //nolint:errcheck // the next attempt starts over at byte 0 anyway
			}
			img.Staged = 0
			a.event(img.Target, wire.StepDownload, wire.StatusFailed, false,
				fmt.Sprintf("%v; downloading again from the start (%d of %d)", err, img.HashFailures+1, maxHashAttempts))
			if saveErr := a.save(); saveErr != nil {
				return saveErr
			}
			continue
		}
		a.discardPending(ctx, "verification failed")
		a.state.FailedTarget, a.state.FailedSHA256, a.state.LastError = img.Target, img.SHA256, err.Error()
		a.event(img.Target, wire.StepDownload, wire.StatusFailed, true, err.Error())
		if saveErr := a.save(); saveErr != nil {
			return saveErr
		}
		return err
	}
	a.state.Phase = PhaseDownloaded
	a.eventWith(wire.Event{Target: img.Target, Step: wire.StepDownload, Status: wire.StatusOK, Message: img.downloadSummary(),
		Downloaded: img.downloaded(), ImageLength: img.Length})
	if err := a.save(); err != nil {
		return err
	}
	return a.resume(ctx)
}

// download streams the target into the installer's stage. It resumes from the journaled
// offset: the staged prefix is read back into the hashes, then the rest is fetched with an HTTP
// Range request. Within one cycle it retries transient failures with exponential backoff and
// jitter, honouring Retry-After.
func (a *Agent) download(ctx context.Context, tf *metadata.TargetFiles, img *Image) error {
	if img.Delta != nil && !img.Delta.Failed {
		err := a.downloadDelta(ctx, tf, img)
		var ed *errDelta
		if refused(err) {
			err = &errDelta{err} // a delta the server will not serve: resuming it would never end
		}
		if !errors.As(err, &ed) {
			return err // done, or the network: the next cycle resumes the delta
		}
		a.log.Warn("delta failed; downloading the full image", "target", img.Target, "err", err)
		if err := a.deltaFallback(img, err); err != nil {
			return err
		}
	}
	url := a.dl.TargetURL(img.Target)
	var err error
	backoff := time.Second
	for attempt := 0; attempt <= a.cfg.DownloadRetries; attempt++ {
		if attempt > 0 {
			wait := backoff
			var te *TransientError
			if !errors.As(err, &te) {
				te = nil
			} else if te.RetryAfter > wait {
				wait = te.RetryAfter
			}
			if wait > a.cfg.MaxRetryWait {
				return err // leave it to the next cycle
			}
			d := devclient.Jitter(wait)
			if te != nil && d < te.RetryAfter {
				d = te.RetryAfter // jitter may spread a wait, never shorten what the server asked
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
			backoff *= 2
		}
		err = a.downloadOnce(ctx, url, tf, img)
		var ve *uptane.VerificationError
		if err == nil || errors.As(err, &ve) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func (a *Agent) downloadOnce(ctx context.Context, url string, tf *metadata.TargetFiles, img *Image) error {
	hs, err := newHashes(tf)
	if err != nil {
		return err
	}
	off := img.Staged
	if off > tf.Length {
		off = 0
	}
	if off > 0 {
		// Re-hash the durable prefix so that the hashes cover the whole image across resumes.
		r, err := a.installer.ReadStaged(ctx, img)
		if err == nil {
			n, _ := io.CopyN(hs, r, off)
			r.Close()
			if n != off {
				off = 0
			}
		} else {
			off = 0
		}
		if off == 0 {
			hs, _ = newHashes(tf)
		}
	}
	w, err := a.installer.Stage(ctx, img, off)
	if err != nil {
		return fmt.Errorf("stage %s: %w", img.Target, err)
	}
	ckpt := func(n int64) error { // make the prefix durable, then journal it
		if err := w.Sync(); err != nil {
			return err
		}
		img.Staged = n
		return a.save()
	}
	n, err := off, error(nil)
	if off < tf.Length {
		n, err = fetchRange(ctx, a.dl, a.token, url, `"`+img.SHA256+`"`, off, tf.Length, hs.tee(w), a.cfg.MinRate, a.cfg.SlowWindow, a.cfg.CheckpointEvery, ckpt)
	} // else the whole image was staged and journaled before a power cut: only verify it (a
	// Range request from its length would be answered 416)
	if err != nil {
		ckpt(n)   //nolint:errcheck // best effort: a resume re-checks what it finds
		w.Close() //nolint:errcheck
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("stage %s: %w", img.Target, err)
	}
	img.Staged = n
	if err := hs.verify(tf); err != nil {
		var ve *uptane.VerificationError
		if errors.As(err, &ve) {
			return &mismatchError{ve}
		}
		return err
	}
	return nil
}

// maxHashAttempts is how many complete downloads of one image may fail its signed hash before
// the image is declared failed.
const maxHashAttempts = 3

// mismatchError is a *uptane.VerificationError for a complete download whose hash differs from
// the signed one: worth fetching again from the start, a few times.
type mismatchError struct{ ve *uptane.VerificationError }

func (e *mismatchError) Error() string { return e.ve.Error() }
func (e *mismatchError) Unwrap() error { return e.ve }

// StreamTarget downloads url into w, verifying the length and the signed digest newHashes picks
// (SHA-256, or SHA-512 when tf lists no SHA-256) while streaming. The read is bounded by the signed length (TUF "endless data") and
// aborted below the agent's default minimum rate (TUF "slow retrieval"); hc should have no total
// timeout (NewDownloadClient), so that a slow but steady link finishes. Network
// trouble and short reads are *TransientError; anything that contradicts the signed metadata is
// a *uptane.VerificationError. On error, w holds garbage and must be discarded.
func StreamTarget(ctx context.Context, hc *http.Client, url string, tf *metadata.TargetFiles, w io.Writer) error {
	hs, err := newHashes(tf)
	if err != nil {
		return err
	}
	if _, err := fetchRange(ctx, &devclient.Client{HTTP: hc}, nil, url, "", 0, tf.Length, hs.tee(w), defaultMinRate, defaultSlowWindow, 0, nil); err != nil {
		return err
	}
	return hs.verify(tf)
}

// hashes computes the signed digest the agent checks while an image streams past:
// uptane.ImageHash (SHA-256) when the targets entry lists it, as every entry uptane.Decide
// accepts does, else SHA-512 (tuf-client, on other repositories). One collision-resistant
// digest signed by the offline targets key binds the bytes; computing a second one would
// double the CPU an install costs a small device without making a forgery any harder
// (docs/DECISIONS.md).
type hashes map[string]hash.Hash

func newHashes(tf *metadata.TargetFiles) (hashes, error) {
	for _, alg := range []string{uptane.ImageHash, "sha512"} {
		if tf.Hashes[alg] != nil {
			return hashes{alg: hashFuncs[alg]()}, nil
		}
	}
	return nil, &uptane.VerificationError{Reason: uptane.ReasonHashMismatch, Msg: "target has neither sha256 nor sha512"}
}

// hashFuncs are the digests newHashes can compute, by their TUF names.
var hashFuncs = map[string]func() hash.Hash{"sha256": sha256.New, "sha512": sha512.New}

func (hs hashes) Write(p []byte) (int, error) {
	for _, h := range hs {
		h.Write(p)
	}
	return len(p), nil
}

// tee returns a writer that writes each chunk to w while the hash consumes it on its own
// goroutine, so that hashing and the slot write overlap on a multi-core device.
func (hs hashes) tee(w io.Writer) io.Writer { return teeHasher{w: w, hs: hs} }

type teeHasher struct {
	w  io.Writer
	hs hashes
}

func (t teeHasher) Write(p []byte) (int, error) {
	var wg sync.WaitGroup
	for _, h := range t.hs {
		wg.Go(func() { h.Write(p) })
	}
	n, err := t.w.Write(p)
	wg.Wait()
	return n, err
}

func (hs hashes) verify(tf *metadata.TargetFiles) error {
	for _, alg := range slices.Sorted(maps.Keys(hs)) {
		if got := hs[alg].Sum(nil); hex.EncodeToString(got) != tf.Hashes[alg].String() {
			return &uptane.VerificationError{Reason: uptane.ReasonHashMismatch, Msg: fmt.Sprintf("%s of the downloaded image differs from the signed one", alg)}
		}
	}
	return nil
}

// fetchRange GETs url from byte off to length, writing to w, with the device token from token
// (nil: none). It returns the total bytes now staged (off plus what arrived). ifRange guards a
// resume: if the artifact changed, the server answers with the whole file and the download
// starts over from 0 (devclient.ErrRangeIgnored). A watchdog aborts the transfer when fewer
// than minRate bytes per second arrive over window (TUF "slow retrieval"). ckpt, if set, is
// called every ckptEvery bytes.
func fetchRange(ctx context.Context, c *devclient.Client, token devclient.TokenFunc, url, ifRange string, off, length int64, w io.Writer, minRate int64, window time.Duration, ckptEvery int64, ckpt func(int64) error) (int64, error) {
	return fetchPart(ctx, c, token, url, ifRange, off, length, false, w, minRate, window, ckptEvery, ckpt)
}

// fetchPart is fetchRange; with part, length is the end of a range inside a longer artifact
// (the chunks a delta lacks), asked for with a closed Range.
func fetchPart(ctx context.Context, c *devclient.Client, token devclient.TokenFunc, url, ifRange string, off, length int64, part bool, w io.Writer, minRate int64, window time.Duration, ckptEvery int64, ckpt func(int64) error) (int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	tok := ""
	if token != nil {
		var err error
		if tok, err = token(ctx); err != nil {
			return off, err
		}
	}
	want := int64(-1)
	if part {
		want = length - off
	}
	resp, err := c.FetchArtifactRange(ctx, tok, url, off, want, ifRange)
	if err != nil {
		if errors.Is(err, devclient.ErrRangeIgnored) {
			return 0, err
		}
		return off, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > length-off {
		return off, &uptane.VerificationError{Reason: uptane.ReasonLengthMismatch, Msg: fmt.Sprintf("server offers %d more bytes, %d were signed", resp.ContentLength, length-off)}
	}
	var got atomic.Int64
	if minRate > 0 && window > 0 {
		go watchRate(ctx, cancel, &got, minRate, window)
	}
	n := off
	buf := make([]byte, 256<<10)
	body := io.LimitReader(resp.Body, length-off+1)
	next := off + ckptEvery
	for {
		k, rerr := body.Read(buf)
		if k > 0 {
			if n+int64(k) > length {
				return n, &uptane.VerificationError{Reason: uptane.ReasonLengthMismatch, Msg: fmt.Sprintf("server sent more than the %d signed bytes", length)}
			}
			if _, err := w.Write(buf[:k]); err != nil {
				return n, fmt.Errorf("write image: %w", err)
			}
			n += int64(k)
			got.Store(n - off)
			if ckpt != nil && ckptEvery > 0 && n >= next {
				if err := ckpt(n); err != nil {
					return n, err
				}
				next = n + ckptEvery
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				rerr = cause
			}
			return n, &TransientError{Err: fmt.Errorf("download interrupted at byte %d: %w", n, rerr)}
		}
	}
	if n < length {
		return n, &TransientError{Err: fmt.Errorf("download truncated at %d of %d bytes", n, length)}
	}
	return n, nil
}

// errTooSlow is the cause of a transfer aborted by the slow-retrieval defence.
var errTooSlow = errors.New("transfer slower than the minimum rate")

// watchRate cancels the transfer when, over each window, fewer than minRate bytes per second
// arrived.
func watchRate(ctx context.Context, cancel context.CancelCauseFunc, got *atomic.Int64, minRate int64, window time.Duration) {
	t := time.NewTicker(window)
	defer t.Stop()
	last := int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cur := got.Load()
			if float64(cur-last)/window.Seconds() < float64(minRate) {
				cancel(fmt.Errorf("%w: %d bytes in %s", errTooSlow, cur-last, window))
				return
			}
			last = cur
		}
	}
}

// gate says why a downloaded image may not be installed now, or "" if it may: the owner's
// consent when the director's policy asks for it, and the maintenance window (the director's, or
// the device's own) unless the policy waives it.
func (a *Agent) gate(ctx context.Context, p *Image) string {
	pol := p.Install
	if pol == nil {
		pol = &installpolicy.Policy{}
	}
	if optedOut := OptedOut(a.cfg.StateDir); (pol.Consent || optedOut) && !a.consented(ctx, p) {
		if !pol.Consent {
			return "awaiting the owner's consent (the owner opted out of automatic updates)"
		}
		return "awaiting the owner's consent"
	}
	window := cmp.Or(pol.Window, a.cfg.Window)
	if (window != "" || pol.Days != "") && !pol.IgnoreWindow && !installpolicy.InWindowOn(window, pol.Days, now(a.cfg)) {
		if pol.Days != "" {
			return "outside the maintenance window " + cmp.Or(window, "00:00-24:00") + " UTC on " + pol.Days
		}
		return "outside the maintenance window " + window + " UTC"
	}
	return ""
}

func (a *Agent) consented(ctx context.Context, p *Image) bool {
	if b, err := os.ReadFile(filepath.Join(a.cfg.StateDir, consentFile)); err == nil && strings.TrimSpace(string(b)) == p.SHA256 {
		return true
	}
	if a.cfg.Consent == nil {
		return false
	}
	hctx, cancel := a.hookContext(ctx)
	defer cancel()
	ok, err := a.cfg.Consent(hctx, *p) // no answer in time: not consented, asked again later
	if err != nil {
		a.log.Warn("consent hook", "err", err)
	}
	return ok && err == nil
}

// SetOptOut records the owner's choice about automatic updates in the state folder dir (a file
// of its own, written atomically, so that a running agent's journal writes never undo it). When
// on, every update, security updates included, is downloaded but waits for the owner's consent
// before it is installed, as an update whose campaign asks for consent does.
func SetOptOut(dir string, on bool) error {
	if _, err := ReadStatus(dir); err != nil {
		return err
	}
	p := filepath.Join(dir, optOutFile)
	if !on {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("opt-out: %w", err)
		}
		return nil
	}
	if err := boot.WriteFileAtomic(p, []byte("on\n"), 0o600); err != nil {
		return fmt.Errorf("opt-out: %w", err)
	}
	return nil
}

// OptedOut reports whether the owner of the agent in dir opted out of automatic updates.
func OptedOut(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, optOutFile))
	return err == nil && strings.TrimSpace(string(b)) == "on"
}

// GrantConsent records the owner's consent to install the image the agent in dir is waiting
// with. It fails if no downloaded image waits.
func GrantConsent(dir string) (*Image, error) {
	st, err := ReadStatus(dir)
	if err != nil {
		return nil, err
	}
	if st.Pending == nil {
		return nil, errors.New("no update is pending")
	}
	if err := boot.WriteFileAtomic(filepath.Join(dir, consentFile), []byte(st.Pending.SHA256+"\n"), 0o600); err != nil {
		return nil, err
	}
	return st.Pending, nil
}

// resume carries the journal forward from wherever it stands. It runs at start-up (after a
// power cut or a crash at any instant) and after each step; every step is journaled before it is
// taken, and every installer step is idempotent.
func (a *Agent) resume(ctx context.Context) error {
	for {
		p := a.state.Pending
		var err error
		switch a.state.Phase {
		case PhaseIdle, "":
			return nil
		case PhaseDownloading:
			return nil // the next cycle verifies again and resumes the download
		case PhaseDownloaded:
			if why := a.gate(ctx, p); why != "" {
				if p.Waiting != why {
					p.Waiting = why
					a.event(p.Target, wire.StepInstall, wire.StatusWaiting, false, why)
					a.log.Info("install waits", "target", p.Target, "why", why)
				}
				return a.save()
			}
			if p.Waiting != "" {
				p.Waiting = ""
				a.event(p.Target, wire.StepInstall, wire.StatusStarted, false, "")
			}
			a.state.Phase = PhaseInstalling
		case PhaseInstalling:
			var reboot bool
			if reboot, err = a.installer.Install(ctx, p); err != nil {
				a.event(p.Target, wire.StepInstall, wire.StatusFailed, true, err.Error())
				a.failed(p.Target, wire.StepInstall, err)
				a.state.Phase, a.state.LastError = PhaseRollingBack, "install: "+err.Error()
				a.state.FailedTarget, a.state.FailedSHA256 = p.Target, p.SHA256
				break
			}
			p.Reboot = reboot
			a.event(p.Target, wire.StepInstall, wire.StatusOK, false, p.where())
			a.state.Phase = PhaseInstalled
		case PhaseInstalled:
			if !p.Reboot {
				a.state.Phase = PhaseVerifying
				break
			}
			if o, oerr := a.installer.Outcome(ctx, p); oerr == nil && o == OutcomeTrial {
				// Power was cut after the trial was armed: the device already booted into it.
				a.state.Phase = PhaseVerifying
				break
			}
			a.state.Phase = PhaseRebooting
			a.event(p.Target, wire.StepReboot, wire.StatusStarted, false, "")
			if err := a.save(); err != nil {
				return err
			}
			a.flush(ctx) //nolint:errcheck // reported after the reboot otherwise
			if err := a.installer.Reboot(ctx); err != nil {
				return fmt.Errorf("reboot: %w", err)
			}
			continue // a simulated boot loader returns: carry on as a fresh start would
		case PhaseRebooting, PhaseVerifying:
			var o Outcome
			if o, err = a.installer.Outcome(ctx, p); err != nil {
				return err
			}
			switch o {
			case OutcomeCommitted:
				a.state.Phase = PhaseCommitted
			case OutcomePrevious:
				// The trial did not survive (the boot loader fell back, or power was cut during it).
				a.state.FailedTarget, a.state.FailedSHA256 = p.Target, p.SHA256
				a.state.LastError = "trial of " + p.Target + " did not survive; running the previous image"
				a.event(p.Target, wire.StepRollback, wire.StatusOK, true, a.state.LastError)
				a.state.Phase = PhaseFailed
			case OutcomeTrial:
				if a.state.Phase == PhaseRebooting {
					a.state.Phase = PhaseVerifying
					break
				}
				if herr := a.health(ctx); herr != nil {
					a.event(p.Target, wire.StepHealth, wire.StatusFailed, true, herr.Error())
					a.failed(p.Target, wire.StepHealth, herr)
					a.state.Phase, a.state.LastError = PhaseRollingBack, "health check: "+herr.Error()
					a.state.FailedTarget, a.state.FailedSHA256 = p.Target, p.SHA256
					break
				}
				a.event(p.Target, wire.StepHealth, wire.StatusOK, false, "")
				if err = a.installer.Commit(ctx, p); err != nil {
					return fmt.Errorf("commit: %w", err)
				}
				a.state.Phase = PhaseCommitted
			}
		case PhaseCommitted:
			a.state.Installed = *p
			a.state.Installed.Staged, a.state.Installed.Reboot, a.state.Installed.HashFailures, a.state.Installed.Delta = 0, false, 0, nil
			a.state.Phase, a.state.Pending, a.state.LastError = PhaseIdle, nil, ""
			a.event(p.Target, wire.StepCommit, wire.StatusOK, false, "version "+p.Version)
		case PhaseRollingBack:
			o, err := a.installer.Outcome(ctx, p)
			if err != nil {
				return err
			}
			if o == OutcomePrevious {
				a.event(p.Target, wire.StepRollback, wire.StatusOK, true, "running "+a.state.Installed.Target)
				a.state.Phase = PhaseFailed
				break
			}
			reboot, err := a.installer.Rollback(ctx, p)
			if err != nil {
				return fmt.Errorf("roll back: %w", err)
			}
			if reboot {
				if err := a.save(); err != nil {
					return err
				}
				a.flush(ctx) //nolint:errcheck
				if err := a.installer.Reboot(ctx); err != nil {
					return fmt.Errorf("reboot: %w", err)
				}
				continue
			}
			a.event(p.Target, wire.StepRollback, wire.StatusOK, true, "running "+a.state.Installed.Target)
			a.state.Phase = PhaseFailed
		case PhaseFailed:
			a.state.Phase, a.state.Pending = PhaseIdle, nil
		default:
			return fmt.Errorf("unknown journal phase %q", a.state.Phase)
		}
		if err := a.save(); err != nil {
			return err
		}
	}
}

// health runs the health check, bounded by HookTimeout: a check that hangs has failed.
func (a *Agent) health(ctx context.Context) error {
	if a.cfg.Health == nil {
		return nil
	}
	hctx, cancel := a.hookContext(ctx)
	defer cancel()
	err := a.cfg.Health(hctx)
	if cause := context.Cause(hctx); errors.Is(cause, errHookTimeout) && ctx.Err() == nil {
		return fmt.Errorf("health check: %w", cause)
	}
	return err
}

// errHookTimeout is the cause of a hook cancelled after HookTimeout.
var errHookTimeout = errors.New("no answer within the hook timeout")

// hookContext bounds one call of a device hook (health, consent, notice) by HookTimeout.
func (a *Agent) hookContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := a.cfg.HookTimeout
	if d <= 0 {
		d = defaultHookTimeout
	}
	return context.WithTimeoutCause(ctx, d, fmt.Errorf("%w (%s)", errHookTimeout, d))
}

// noticeFrom records the lifecycle notice of verified director targets and, when it changed,
// tells the device (the notice hook) so that it can tell its owner.
func (a *Agent) noticeFrom(ctx context.Context, t *metadata.TargetsType) error {
	n, err := uptane.ReadNotice(t)
	if err != nil {
		return &uptane.VerificationError{Reason: uptane.ReasonBadCustom, Msg: "director lifecycle notice", Err: err}
	}
	if (n == nil) == (a.state.Notice == nil) && (n == nil || *n == *a.state.Notice) {
		return nil
	}
	a.state.Notice = n
	if n != nil {
		a.log.Warn("end-of-support notice", "product", n.Product, "end_of_support", n.EndOfSupport)
	}
	if a.cfg.NoticeHook != nil {
		hctx, cancel := a.hookContext(ctx)
		err := a.cfg.NoticeHook(hctx, n)
		cancel()
		if err != nil {
			a.log.Error("notice hook failed", "err", err)
		}
	}
	return a.save()
}
