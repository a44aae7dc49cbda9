package ddi

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"path"
	"strings"
	"sync"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// current brings the device's actions in line with its assignment and returns the action to
// offer (open or canceling; nil: none) and the last successful one (nil: none).
//
// The director names one target per device (fleet.Device.Assigned). An assignment the device
// does not run yet becomes a new open action, unless the newest action is for the same target
// and ended other than by a cancel (a failed image is not offered again, as the agent does not
// retry it). An open action whose target is no longer assigned (a cancelled campaign, a newer
// campaign superseding it) becomes canceling: the device is offered cancelAction until it
// answers, and only then the next action.
func (s *Service) current(ctx context.Context, d *fleet.Device) (active, installed *Action, err error) {
	acts, err := s.Actions.FindActions(ctx, d.ID, 16)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range acts {
		if a.Status == ActionClosed && a.Result == ResultSuccess {
			installed = a
			break
		}
	}
	if d.Status != fleet.StatusAccepted {
		return nil, installed, nil
	}
	want := d.Assigned
	if want == d.InstalledTarget {
		want = ""
	}
	var latest *Action
	if len(acts) > 0 {
		latest = acts[0]
	}
	if latest != nil && latest.Status != ActionClosed {
		if latest.Target == want || latest.Status == ActionCanceling {
			return latest, installed, nil
		}
		canceling := ActionCanceling
		if _, err := s.Actions.UpdateAction(ctx, d.ID, latest.ID, []string{ActionOpen}, ActionUpdate{Status: &canceling, At: s.now()}); err != nil {
			return nil, nil, err
		}
		latest.Status = ActionCanceling
		s.logger().Info("DDI action withdrawn", "device", d.ID, "action", latest.ID, "target", latest.Target)
		return latest, installed, nil
	}
	if want == "" || latest != nil && latest.Target == want && latest.Result != ResultCanceled {
		return nil, installed, nil
	}
	now := s.now()
	a := &Action{DeviceID: d.ID, Target: want, Status: ActionOpen, CreatedAt: now, UpdatedAt: now}
	if err := s.Actions.CreateAction(ctx, a); err != nil {
		return nil, nil, err
	}
	if p := policyOf(d, want); p.Consent {
		// The campaign counts the member as waiting, as it does an agent at its install gate.
		s.report(ctx, d.ID, wire.Report{State: "waiting", Events: []wire.Event{{Time: now, Target: want, Step: wire.StepInstall, Status: wire.StatusWaiting, Message: "waiting for the owner's confirmation (DDI confirmationBase)"}}})
	}
	return a, installed, nil
}

// report hands a report to the fleet; a failure is logged (the device's feedback was taken).
func (s *Service) report(ctx context.Context, id string, r wire.Report) {
	if err := s.Fleet.Report(ctx, id, r); err != nil {
		s.logger().Error("DDI feedback not recorded", "device", id, "err", err)
	}
}

// policyOf returns the install policy signed with the device's assignment of target.
func policyOf(d *fleet.Device, target string) installpolicy.Policy {
	var p installpolicy.Policy
	if d.Assigned == target && d.AssignPolicy != "" {
		json.Unmarshal([]byte(d.AssignPolicy), &p) //nolint:errcheck // the director wrote it; zero is "install at once"
	}
	return p
}

// modes returns the deployment's download and update modes and its maintenance window
// ("available", "unavailable", or "" when none applies): forced without consent, attempt with
// it (hawkBit's soft action), and update skip outside the window.
func (s *Service) modes(p installpolicy.Policy) (download, update, window string) {
	download, update = "forced", "forced"
	if p.Consent {
		download, update = "attempt", "attempt"
	}
	if (p.Window != "" || p.Days != "") && !p.IgnoreWindow {
		if p.Window == "" || installpolicy.ValidWindow(p.Window) == nil {
			window = "available"
			if !installpolicy.InWindowOn(p.Window, p.Days, s.now()) {
				window, update = "unavailable", "skip"
			}
		}
	}
	return download, update, window
}

// artifact is one artifact of a deployment, as the handlers need it.
type artifact struct {
	Filename string
	Size     int64
	SHA256   string
	MD5      string
	SHA1     string
	Custom   uptane.TargetCustom
}

// artifactName is the file name a DDI client is given: the target's last path element, with
// the extension its client requires (SWUpdate accepts only .swu) added when missing.
func artifactName(target, typ string) string {
	name := path.Base(target)
	ext := map[string]string{uptane.ArtifactSWU: ".swu", uptane.ArtifactRAUCB: ".raucb"}[typ]
	if ext != "" && !strings.HasSuffix(strings.ToLower(name), ext) {
		name += ext
	}
	return name
}

// artifactOf returns the artifact of a target from the image repository's offline-signed
// targets: a target no longer listed there is not offered (apperr.NotFound).
func (s *Service) artifactOf(ctx context.Context, target string) (*artifact, error) {
	tf, err := s.Targets.TargetFile(ctx, target)
	if err != nil {
		return nil, err
	}
	c, err := uptane.ParseTargetCustom(tf)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", target, err)
	}
	sum := hex.EncodeToString(tf.Hashes["sha256"])
	if sum == "" {
		return nil, fmt.Errorf("target %s has no sha256", target)
	}
	dg, err := s.digest(ctx, sum)
	if err != nil {
		return nil, err
	}
	return &artifact{Filename: artifactName(target, c.ArtifactType), Size: tf.Length, SHA256: sum, MD5: dg.md5, SHA1: dg.sha1, Custom: c}, nil
}

// digest holds the MD5 and SHA-1 of a blob, which DDI clients check (SWUpdate requires sha1)
// but the signed targets do not list. They are computed once per blob and replica, while the
// blob is read, and the bytes are checked against the signed SHA-256 at the same time.
type digest struct {
	once      sync.Once
	md5, sha1 string
	err       error
}

func (s *Service) digest(ctx context.Context, sum string) (*digest, error) {
	v, _ := s.digests.LoadOrStore(sum, &digest{})
	dg := v.(*digest)
	dg.once.Do(func() {
		rd, _, err := s.Blobs.Open(ctx, sum)
		if err != nil {
			dg.err = err
			return
		}
		defer rd.Close()
		m, h1, h256 := md5.New(), sha1.New(), sha256.New()
		if _, err := io.Copy(io.MultiWriter(m, h1, h256), rd); err != nil {
			dg.err = fmt.Errorf("hash artifact %s: %w", sum, err)
			return
		}
		if hex.EncodeToString(h256.Sum(nil)) != sum {
			dg.err = apperr.E(apperr.Internal, "stored artifact %s does not match its signed sha256", sum)
			return
		}
		dg.md5, dg.sha1 = hex.EncodeToString(m.Sum(nil)), hex.EncodeToString(h1.Sum(nil))
	})
	if dg.err != nil {
		s.digests.CompareAndDelete(sum, dg) // try again next time
		return nil, dg.err
	}
	return dg, nil
}

// actionHash is the ?c= of an action link: it changes when what the device should do changes.
func actionHash(a *Action, extra string) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%d/%s/%s/%t/%s", a.ID, a.Target, a.Status, a.Confirmed, extra)
	return fmt.Sprint(int32(h.Sum32()))
}
