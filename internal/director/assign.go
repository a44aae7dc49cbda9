package director

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/uptane"
)

// Assign makes the director name rel's image for device d and signs the device's new view.
func (s *Service) Assign(ctx context.Context, d *fleet.Device, rel *release.Release) error {
	return s.AssignWith(ctx, d, rel, nil)
}

// AssignWith is Assign with an install policy (consent, maintenance window) that the device
// receives signed with the assignment.
func (s *Service) AssignWith(ctx context.Context, d *fleet.Device, rel *release.Release, p *installpolicy.Policy) error {
	if err := assignable(d, rel); err != nil {
		return err
	}
	pol, err := encodePolicy(p)
	if err != nil {
		return err
	}
	return s.reassign(ctx, d.ID, rel.Target, pol)
}

// assignable refuses a device that is not accepted, or of another product, or whose hardware
// rel is not for. Devices check the product too (uptane.Decide); refusing here gives the operator
// a clear answer instead of a device's verification failure.
func assignable(d *fleet.Device, rel *release.Release) error {
	if d.Status != fleet.StatusAccepted {
		return apperr.E(apperr.Invalid, "device %s is %s, not accepted", d.ID, d.Status)
	}
	if rel.Product != d.Product {
		return apperr.E(apperr.Invalid, "release %s is for product %s, device %s is a %s", rel.Ref(), rel.Product, d.ID, d.Product)
	}
	if !slices.Contains(rel.HardwareIDs, d.HardwareID) {
		return apperr.E(apperr.Invalid, "release %s is not for hardware %s of device %s", rel.Ref(), d.HardwareID, d.ID)
	}
	return nil
}

// encodePolicy is the stored form of an install policy ("" for none).
func encodePolicy(p *installpolicy.Policy) (string, error) {
	if p == nil {
		return "", nil
	}
	b, err := json.Marshal(p)
	return string(b), err
}

// reassign signs the device's view for target; the store records the assignment in the same
// transaction as the view, so no assignment exists that no view carries.
func (s *Service) reassign(ctx context.Context, id, target, pol string) error {
	return s.resignAs(ctx, id, &Assignment{Target: target, Policy: pol})
}

// Assignment is the image a device's director view names and the install policy it carries.
type Assignment struct{ Target, Policy string }

// ViewPut is one device's next director view for MetadataStore.PutDirectorViews.
type ViewPut struct {
	DeviceID string
	Prev     int64
	View     *uptane.DirectorView
	Assign   *Assignment
}

// assignSigners is how many views AssignMany signs at once.
const assignSigners = 4

// AssignMany is AssignWith for many devices: it signs their views a few at a time and stores
// them in one transaction, so that a wave of thousands costs a few write transactions rather
// than one per device. A device whose view changed meanwhile is assigned on its own. It
// returns the devices it could not assign, with the reason.
func (s *Service) AssignMany(ctx context.Context, ds []*fleet.Device, rel *release.Release, p *installpolicy.Policy) map[string]error {
	failed := map[string]error{}
	pol, perr := encodePolicy(p)
	var todo []*fleet.Device
	for _, d := range ds {
		err := perr
		if err == nil {
			err = assignable(d, rel)
		}
		if err != nil {
			failed[d.ID] = err
			continue
		}
		todo = append(todo, d)
	}
	if len(todo) == 0 {
		return failed
	}
	one := func(ids []string) { // the careful path, device by device
		for _, id := range ids {
			if err := s.reassign(ctx, id, rel.Target, pol); err != nil {
				failed[id] = err
			}
		}
	}
	ids := make([]string, len(todo))
	for i, d := range todo {
		ids[i] = d.ID
	}
	tf, err := s.Images.TargetFile(ctx, rel.Target)
	if apperr.Is(err, apperr.NotFound) {
		for _, id := range ids {
			failed[id] = err
		}
		return failed
	}
	if err != nil {
		one(ids)
		return failed
	}
	prev, err := s.Store.LatestDirectorVersions(ctx, ids)
	if err != nil {
		one(ids)
		return failed
	}
	notices := map[string]*uptane.Notice{}
	for _, d := range todo {
		if _, ok := notices[d.Product]; ok || s.Notice == nil {
			continue
		}
		n, err := s.Notice(ctx, d.Product)
		if err != nil {
			one(ids)
			return failed
		}
		notices[d.Product] = n
	}
	as := &Assignment{Target: rel.Target, Policy: pol}
	var deltas []delta.Target
	if s.Deltas != nil {
		if deltas, err = s.Deltas(ctx); err != nil {
			s.logger().Warn("delta targets", "err", err)
		}
	}
	puts := make([]ViewPut, len(todo))
	errs := make([]error, len(todo))
	var wg sync.WaitGroup
	sem := make(chan struct{}, assignSigners)
	for i, d := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			v := prev[d.ID]
			view, err := uptane.SignView(s.Key, uptane.ViewSpec{Version: v + 1, Expires: s.now().Add(s.Lifetimes.Director),
				DeviceID: d.ID, HardwareID: d.HardwareID, Name: rel.Target, Target: tf, Notice: notices[d.Product], Install: p,
				Delta: s.deltaHint(ctx, d.InstalledSHA256, rel.Target, deltas)})
			puts[i], errs[i] = ViewPut{DeviceID: d.ID, Prev: v, View: view, Assign: as}, err
		}()
	}
	wg.Wait()
	var ok []ViewPut
	for i, put := range puts {
		if errs[i] != nil {
			failed[put.DeviceID] = errs[i]
			continue
		}
		ok = append(ok, put)
	}
	stale, err := s.Store.PutDirectorViews(ctx, ok)
	if err != nil { // a race with another writer: nothing was stored
		one(ids)
		return failed
	}
	for _, put := range ok {
		if slices.Contains(stale, put.DeviceID) {
			continue
		}
		s.views.put(put.DeviceID, put.View)
		if s.OnAssign != nil {
			s.OnAssign(put.DeviceID, put.View.Version)
		}
	}
	one(stale)
	return failed
}

// Unassign makes the director name the image the device runs, so that it installs nothing new;
// a download in progress is abandoned at the device's next verification. A device that runs an
// image the image repository does not hold (a factory image never published) gets a view that
// names no image at all: withdrawn, it installs nothing (Uptane: no director target, no update).
func (s *Service) Unassign(ctx context.Context, d *fleet.Device) error {
	target := d.InstalledTarget
	if target != "" {
		if _, err := s.Images.TargetFile(ctx, target); apperr.Is(err, apperr.NotFound) {
			target = ""
		} else if err != nil {
			return err
		}
	}
	return s.reassign(ctx, d.ID, target, "")
}

// Reported re-signs a device's view when the delta hint it carries no longer fits the image the
// device now reports it runs. A hint is chosen when the view is signed, from the installed image
// the server knew of then; a device assigned a release before it reported its last install (it
// was offline, or its report was still in its journal) would otherwise fetch the whole image
// although a delta from what it runs exists, or try a delta from an image it no longer runs.
// It does nothing for a device without delta targets, without a pending assignment or without
// a view.
func (s *Service) Reported(ctx context.Context, id string) error {
	if s.Deltas == nil {
		return nil
	}
	d, err := s.Devices.FindDevice(ctx, id)
	if err != nil {
		return err
	}
	if d.Assigned == "" || d.Assigned == d.InstalledTarget {
		return nil
	}
	v, err := s.Store.FindDirectorView(ctx, id, 0)
	if apperr.Is(err, apperr.NotFound) {
		return nil
	} else if err != nil {
		return err
	}
	md, err := metadata.Targets().FromBytes(v.Targets)
	if err != nil {
		return err
	}
	if _, ok := md.Signed.Targets[d.Assigned]; !ok {
		return nil // the view names another image (an assignment being signed): its signer chooses
	}
	want := s.chooseDelta(ctx, d.InstalledSHA256, d.Assigned, nil)
	if have := hintOf(md); have == want || (have != nil && want != nil && *have == *want) {
		return nil
	}
	s.logger().Info("delta hint follows the reported image", "device", id, "installed", d.InstalledTarget, "assigned", d.Assigned)
	return s.resign(ctx, id)
}

// resign signs a new director view for a device from its stored assignment. The device is read
// after the latest view, so when two signers race the loser retries with the newest assignment.
func (s *Service) resign(ctx context.Context, id string) error { return s.resignAs(ctx, id, nil) }

// resignAs is resign with the assignment given instead of the stored one (nil: the stored one).
func (s *Service) resignAs(ctx context.Context, id string, as *Assignment) error {
	for range 8 {
		var prev int64
		if v, err := s.Store.FindDirectorView(ctx, id, 0); err == nil {
			prev = v.Version
		} else if !apperr.Is(err, apperr.NotFound) {
			return err
		}
		d, err := s.Devices.FindDevice(ctx, id)
		if err != nil {
			return err
		}
		var tf *metadata.TargetFiles
		target, policy := d.Assigned, d.AssignPolicy
		if as != nil {
			target, policy = as.Target, as.Policy
		}
		if target != "" {
			if tf, err = s.Images.TargetFile(ctx, target); err != nil {
				return err
			}
		}
		var pol *installpolicy.Policy
		if policy != "" && target != "" {
			pol = &installpolicy.Policy{}
			if err := json.Unmarshal([]byte(policy), pol); err != nil {
				return fmt.Errorf("device %s install policy: %w", id, err)
			}
		}
		err = s.put(ctx, d, prev, target, tf, pol, as)
		if apperr.Is(err, apperr.Conflict) {
			continue
		}
		return err
	}
	return apperr.E(apperr.Conflict, "director view of %s changed concurrently", id)
}

func (s *Service) put(ctx context.Context, d *fleet.Device, prev int64, target string, tf *metadata.TargetFiles, pol *installpolicy.Policy, as *Assignment) error {
	var notice *uptane.Notice
	if s.Notice != nil {
		var err error
		if notice, err = s.Notice(ctx, d.Product); err != nil {
			return err
		}
	}
	view, err := uptane.SignView(s.Key, uptane.ViewSpec{Version: prev + 1, Expires: s.now().Add(s.Lifetimes.Director),
		DeviceID: d.ID, HardwareID: d.HardwareID, Name: target, Target: tf, Notice: notice, Install: pol,
		Delta: s.deltaHint(ctx, d.InstalledSHA256, target, nil)})
	if err != nil {
		return err
	}
	if err := s.Store.PutDirectorView(ctx, d.ID, prev, view, as); err != nil {
		return err
	}
	s.views.put(d.ID, view)
	if s.OnAssign != nil {
		s.OnAssign(d.ID, view.Version)
	}
	return nil
}

// Resign signs a fresh director view for a device from its stored assignment, for instance
// after its product's lifecycle notice changed.
func (s *Service) Resign(ctx context.Context, id string) error { return s.resign(ctx, id) }

// SignView signs a new director view for d naming exactly target with the entry tf (nil:
// nothing), whatever the device's assignment says. Only the attack tests use it, to play a
// compromised server that holds the online director key.
func (s *Service) SignView(ctx context.Context, d *fleet.Device, target string, tf *metadata.TargetFiles) error {
	var prev int64
	if v, err := s.Store.FindDirectorView(ctx, d.ID, 0); err == nil {
		prev = v.Version
	} else if !apperr.Is(err, apperr.NotFound) {
		return err
	}
	return s.put(ctx, d, prev, target, tf, nil, nil)
}
