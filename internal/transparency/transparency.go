// Package transparency publishes what a product's owner is owed: its update-capability
// declaration, signed with the product's own key, the conformance report, the consumer label
// and the detailed public page, all built from the platform's records (releases, devices, the
// support policy and its history), never from figures typed by hand.
//
// Service gathers the evidence through the stores it is given and hands the rendering to the
// pure internal/label package. It is safe for concurrent use.
package transparency

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/label"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
)

// KeyDir is the folder, inside the server's keys folder, that holds one declaration signing key
// per product: KeyDir/<product>.key (PKCS#8 PEM, mode 0600).
const KeyDir = "declaration"

// Logging attribute keys.
const (
	LogProduct = "product"
	LogKeyID   = "key_id"
	LogPath    = "path"
	LogErr     = "err"
)

// Products is the part of product.Store the service reads.
type Products interface {
	// FindProduct returns apperr.NotFound if the product has no policy.
	FindProduct(ctx context.Context, name string) (*product.Product, error)
	// FindPolicyHistory returns a product's policy changes, oldest first.
	FindPolicyHistory(ctx context.Context, name string) ([]product.PolicyChange, error)
}

// Releases is the part of release.Store the service reads.
type Releases interface {
	FindReleases(ctx context.Context, f release.Filter) ([]*release.Release, error)
}

// Devices is the part of fleet.Store the service reads.
type Devices interface {
	FindDevices(ctx context.Context, f fleet.DeviceFilter) ([]*fleet.Device, error)
}

// Service builds and caches the published artefacts of each product. Products, Releases, Devices,
// KeysDir and PublicURL are required; the other fields may be zero.
type Service struct {
	Products Products
	Releases Releases
	Devices  Devices
	// KeysDir is the server's keys folder; declaration keys live in KeysDir/KeyDir.
	KeysDir string
	// PublicURL is the base URL the public reaches the server at; the label's QR code links to
	// PublicURL + "/p/" + product.
	PublicURL string
	// Manufacturer is who places the products on the market. An empty name falls back to the
	// host of PublicURL, so that the declaration always names someone.
	Manufacturer label.Manufacturer
	// TimeToPatch, if set, returns the advisories matched to a product with the release that
	// fixed each (the vulnerability package provides it). While it is nil, the time-to-patch
	// figures are published as not available, with the reason.
	TimeToPatch func(ctx context.Context, product string) ([]label.TimeToPatch, error)
	// Interval is how long a publication is served before the stores are read again
	// (DefaultInterval when zero). A change of the product's policy is seen at once.
	Interval time.Duration
	Now      func() time.Time
	Logger   *slog.Logger

	mu      sync.Mutex
	entries map[string]*entry
}

// DefaultInterval is how long a publication is served before its inputs are read again.
const DefaultInterval = time.Minute

// entry is one product's latest publication. Its mutex serialises rebuilds, so that a burst of
// requests reads the stores once.
type entry struct {
	mu      sync.Mutex
	checked time.Time    // when the inputs were last read
	policy  time.Time    // the UpdatedAt of the policy they were read with
	pub     *Publication // the last good publication
	err     error        // why the last build failed, while there is no good publication
}

// Publication is everything published about one product, built at Modified.
type Publication struct {
	Product      string
	PageURL      string // absolute URL of the detailed page, as the QR code holds it
	Declaration  label.Declaration
	Envelope     []byte // the signed DSSE envelope of the declaration
	PublicKeyPEM []byte // the key that verifies Envelope
	KeyID        string
	Report       label.Report
	ReportJSON   []byte
	LabelSVG     []byte
	LabelPNG     []byte
	Page         []byte // the detailed layer, HTML
	ReportHTML   []byte // the conformance report alone, HTML
	// ETag is a strong validator, the same for all the files above: it changes whenever any
	// of them does.
	ETag     string
	Modified time.Time

	fp [sha256.Size]byte // fingerprint of the inputs it was built from
}

// PageURL returns the absolute URL of a product's public page under base.
func PageURL(base, product string) string {
	return strings.TrimRight(base, "/") + "/p/" + url.PathEscape(product)
}

// Publication returns the product's current publication. Only the product's policy row is read
// on each call; the other inputs (history, releases, devices, time to patch) are read again at
// most once per Interval, or at once when the policy changed, and the declaration is signed and
// rendered again only when what they say has changed, so that the ETag stays the same while the
// facts do. If a rebuild fails, the last good publication goes on being served and the error is
// logged.
//
// Returns apperr.Invalid for a name that is not a product name, and apperr.NotFound for a
// product without a support policy.
func (s *Service) Publication(ctx context.Context, product string) (*Publication, error) {
	if err := tuf.ValidIdent("product", product); err != nil {
		return nil, apperr.E(apperr.Invalid, "%v", err)
	}
	p, err := s.Products.FindProduct(ctx, product)
	if apperr.Is(err, apperr.NotFound) {
		return nil, apperr.E(apperr.NotFound, "no product named %q publishes a support policy on this server", product)
	}
	if err != nil {
		return nil, fmt.Errorf("publication of %s: %w", product, err)
	}
	e := s.entry(product)
	e.mu.Lock()
	defer e.mu.Unlock()
	fresh := !e.checked.IsZero() && e.policy.Equal(p.UpdatedAt) && s.now().Sub(e.checked) < s.interval()
	switch {
	case fresh && e.pub != nil:
		return e.pub, nil // also a request that waited for another one's rebuild
	case fresh:
		return nil, e.err
	}
	pub, err := s.rebuild(ctx, p, e.pub)
	e.checked, e.policy = s.now(), p.UpdatedAt
	if err != nil {
		if e.pub == nil {
			e.err = err
			return nil, err
		}
		s.logger().Error("publication not rebuilt; serving the last good one", LogProduct, product, LogErr, err)
		return e.pub, nil
	}
	e.pub, e.err = pub, nil
	return pub, nil
}

// rebuild gathers p's inputs and, if their fingerprint differs from the one last was built
// from, builds a new publication; otherwise it returns last.
func (s *Service) rebuild(ctx context.Context, p *product.Product, last *Publication) (*Publication, error) {
	in, err := s.gather(ctx, p)
	if err != nil {
		return nil, err
	}
	if last != nil && in.fp == last.fp {
		return last, nil
	}
	pub, err := s.build(in)
	if err != nil {
		return nil, err
	}
	pub.fp = in.fp
	return pub, nil
}

// PreviewLabel renders the label p would publish (its policy as given, its product's releases
// and devices as stored), without signing, caching or publishing anything: the console's
// preview of a policy being edited.
func (s *Service) PreviewLabel(ctx context.Context, p *product.Product) ([]byte, error) {
	in, err := s.gather(ctx, p)
	if err != nil {
		return nil, err
	}
	return label.RenderSVG(in.decl, in.pageURL), nil
}

// CheckPolicy tells whether p's policy gives a declaration that matches the schema, so that a bad
// value is refused when it is set rather than when the page is built. It reads nothing. Returns
// apperr.Invalid with the schema's complaint.
func (s *Service) CheckPolicy(_ context.Context, p *product.Product) error {
	pol, err := product.ParsePolicy(p.Policy)
	if err != nil {
		return apperr.Wrap(apperr.Invalid, err, "the policy of "+p.Name+" cannot be read")
	}
	at := s.now().UTC()
	evidence := label.ComputeEvidence(at, nil, nil, nil, nil)
	d := label.BuildDeclaration(labelPolicy(p, pol, nil, s.manufacturer()), PlatformMechanism(true), evidence, at)
	canon, err := label.CanonicalJSON(d)
	if err != nil {
		return fmt.Errorf("declaration of %s: %w", p.Name, err)
	}
	if err := label.Validate(canon); err != nil {
		return apperr.Wrap(apperr.Invalid, err, fmt.Sprintf("this policy would give %s a declaration that does not match its schema: %v", p.Name, err))
	}
	return nil
}

func (s *Service) interval() time.Duration {
	if s.Interval > 0 {
		return s.Interval
	}
	return DefaultInterval
}

func (s *Service) entry(product string) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries == nil {
		s.entries = map[string]*entry{}
	}
	e, ok := s.entries[product]
	if !ok {
		e = &entry{}
		s.entries[product] = e
	}
	return e
}

// inputs is what a publication is built from.
type inputs struct {
	now     time.Time
	product string
	pageURL string
	decl    label.Declaration
	key     *tuf.Key
	keyID   string
	fp      [sha256.Size]byte // fingerprint of everything above but now and the build times
}

// gather reads the platform's records about p and builds (without signing) its declaration.
func (s *Service) gather(ctx context.Context, p *product.Product) (*inputs, error) {
	at := s.now().UTC()
	now := at.Truncate(time.Second)
	pol, err := product.ParsePolicy(p.Policy)
	if err != nil {
		return nil, fmt.Errorf("publication of %s: %w", p.Name, err)
	}
	hist, err := s.Products.FindPolicyHistory(ctx, p.Name)
	if err != nil {
		return nil, fmt.Errorf("publication of %s: %w", p.Name, err)
	}
	rels, err := s.Releases.FindReleases(ctx, release.Filter{Product: p.Name})
	if err != nil {
		return nil, fmt.Errorf("publication of %s: %w", p.Name, err)
	}
	devs, err := s.Devices.FindDevices(ctx, fleet.DeviceFilter{Product: p.Name, Status: fleet.StatusAccepted})
	if err != nil {
		return nil, fmt.Errorf("publication of %s: %w", p.Name, err)
	}
	var ttp []label.TimeToPatch
	if s.TimeToPatch != nil {
		if ttp, err = s.TimeToPatch(ctx, p.Name); err != nil {
			return nil, fmt.Errorf("time to patch of %s: %w", p.Name, err)
		}
	}
	key, err := s.DeclarationKey(p.Name)
	if err != nil {
		return nil, err
	}
	keyID, err := label.KeyID(key.Private.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}

	lp := labelPolicy(p, pol, hist, s.manufacturer())
	pageURL := PageURL(s.PublicURL, p.Name)
	if lp.AdvisoriesURL == "" && s.TimeToPatch != nil {
		// The server matches advisories to the product, and the page lists them.
		lp.AdvisoriesURL = pageURL + "#" + label.AdvisoriesAnchor
	}
	facts := make([]label.ReleaseFact, 0, len(rels))
	publishedAt := make(map[string]time.Time, len(rels))
	var maxSecVer int64
	var newestSecurity time.Time
	for _, r := range rels {
		facts = append(facts, label.ReleaseFact{Version: r.Version, Class: r.Class, PublishedAt: r.PublishedAt, Fixes: r.Fixes})
		publishedAt[r.Version] = r.PublishedAt
		maxSecVer = max(maxSecVer, r.SecurityVersion)
		if r.Class == label.ClassSecurity && !r.PublishedAt.After(at) && r.PublishedAt.After(newestSecurity) {
			newestSecurity = r.PublishedAt
		}
	}
	byTarget := make(map[string]*release.Release, len(rels))
	for _, r := range rels {
		byTarget[r.Target] = r
	}
	devices := make([]label.DeviceFact, 0, len(devs))
	for _, d := range devs {
		if d.Simulated {
			continue // `upkeep simulate`'s devices are no one's: they count in no public figure
		}
		// The version is the signed release's, never the one the device states: an image whose
		// name and SHA-256 are not a signed target of this product is unknown.
		f := label.DeviceFact{LastSeen: d.LastSeen, DDI: d.IsDDI()}
		if r := byTarget[d.InstalledTarget]; r.Matches(d.InstalledTarget, d.InstalledSHA256) {
			f.InstalledVersion = r.Version
		} else if d.InstalledTarget != "" || d.InstalledSHA256 != "" || d.InstalledVer != "" {
			f.UnknownImage = true
		}
		devices = append(devices, f)
	}
	// label.SupportedMethod: a release the manufacturer published, not older than the newest
	// security release, while the product is within its support period.
	inSupport := !now.After(endOfDay(pol.End()))
	supported := func(v string) bool {
		t, ok := publishedAt[v]
		return inSupport && ok && !t.Before(newestSecurity)
	}
	ev := label.ComputeEvidence(at, facts, devices, ttp, supported)
	if s.TimeToPatch == nil {
		const why = "not available because advisory matching is not connected to this server yet"
		ev.AdvisoryToFixDays.Note, ev.FixToFleet90Days.Note = why, why
	}
	d := label.BuildDeclaration(lp, PlatformMechanism(maxSecVer > 0), ev, now)

	in := &inputs{now: now, product: p.Name, pageURL: pageURL, decl: d, key: key, keyID: keyID}
	// The fingerprint leaves out what changes with the clock alone, so that an unchanged
	// product keeps its signed declaration, its ETag and its last_updated.
	stable := d
	stable.DeclarationID, stable.LastUpdated, stable.Evidence.ComputedAt = "", time.Time{}, time.Time{}
	b, err := json.Marshal(struct {
		D          label.Declaration
		URL, KeyID string
	}{stable, in.pageURL, keyID})
	if err != nil {
		return nil, fmt.Errorf("fingerprint of %s: %w", p.Name, err)
	}
	in.fp = sha256.Sum256(b)
	return in, nil
}

// build validates, signs and renders.
func (s *Service) build(in *inputs) (*Publication, error) {
	d := in.decl
	canon, err := label.CanonicalJSON(d)
	if err != nil {
		return nil, fmt.Errorf("declaration of %s: %w", in.product, err)
	}
	// The declaration is built by code from stored data: one that does not match the
	// published schema is a bug (or a stored value the policy checks let through), never
	// something to publish.
	if err := label.Validate(canon); err != nil {
		return nil, apperr.Wrap(apperr.Internal, fmt.Errorf("declaration of %s: %w", in.product, err),
			fmt.Sprintf("the declaration of %s cannot be published: it does not match its schema", in.product))
	}
	env, err := label.Sign(d, in.key.Private)
	if err != nil {
		return nil, fmt.Errorf("declaration of %s: %w", in.product, err)
	}
	pubPEM, err := label.MarshalPublicKey(in.key.Private.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	report := label.Conformance(d, in.now)
	reportJSON, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("conformance of %s: %w", in.product, err)
	}
	svg := label.RenderSVG(d, in.pageURL)
	png, err := label.RenderPNG(d, in.pageURL)
	if err != nil {
		return nil, fmt.Errorf("label of %s: %w", in.product, err)
	}
	links := label.PageLinks{
		Declaration: in.pageURL + "/declaration.json", PublicKey: in.pageURL + "/declaration.pub", KeyID: in.keyID,
		Conformance: in.pageURL + "/conformance.json", LabelSVG: in.pageURL + "/label.svg", LabelPNG: in.pageURL + "/label.png",
	}
	page, err := label.RenderPage(d, report, svg, links)
	if err != nil {
		return nil, fmt.Errorf("page of %s: %w", in.product, err)
	}
	reportHTML, err := label.RenderReport(d, report)
	if err != nil {
		return nil, fmt.Errorf("conformance report of %s: %w", in.product, err)
	}
	sum := sha256.New()
	for _, b := range [][]byte{env, pubPEM, reportJSON, svg, png, page, reportHTML} {
		sum.Write(b)
		sum.Write([]byte{0})
	}
	return &Publication{
		Product: in.product, PageURL: in.pageURL, Declaration: d, Envelope: env, PublicKeyPEM: pubPEM, KeyID: in.keyID,
		Report: report, ReportJSON: append(reportJSON, '\n'), LabelSVG: svg, LabelPNG: png, Page: page, ReportHTML: reportHTML,
		ETag: `"` + hex.EncodeToString(sum.Sum(nil)[:16]) + `"`, Modified: in.now,
	}, nil
}

// DeclarationKey returns the product's declaration signing key from
// KeysDir/declaration/<product>.key. If the file does not exist, it generates a key and writes
// it there (mode 0600); an operator who wants a key of their own places the file first. Two
// servers racing to create it end up with the same key: the file is created exclusively and the
// loser reads the winner's.
func (s *Service) DeclarationKey(product string) (*tuf.Key, error) {
	if err := tuf.ValidIdent("product", product); err != nil {
		return nil, apperr.E(apperr.Invalid, "%v", err)
	}
	dir := filepath.Join(s.KeysDir, KeyDir)
	path := filepath.Join(dir, product+".key")
	k, err := tuf.LoadKey(path)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("declaration key of %s: %w", product, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("declaration key of %s: %w", product, err)
	}
	if k, err = tuf.GenerateKey(); err != nil {
		return nil, fmt.Errorf("declaration key of %s: %w", product, err)
	}
	if err := tuf.SaveKey(path, k); errors.Is(err, fs.ErrExist) {
		return tuf.LoadKey(path)
	} else if err != nil {
		return nil, fmt.Errorf("declaration key of %s: %w", product, err)
	}
	id, _ := label.KeyID(k.Private.Public().(ed25519.PublicKey))
	s.logger().Info("generated a declaration signing key", LogProduct, product, LogKeyID, id, LogPath, path)
	return k, nil
}

// PlatformMechanism states the update mechanism as the platform enforces it; nothing here is
// typed by an operator:
//
//   - signed and verified on the device: the server publishes only releases whose targets
//     metadata a threshold of the offline targets keys signed (imagerepo.Service.Publish), and the
//     agent runs Uptane full verification of both repositories before it downloads
//     (uptane.Decide); keys are Ed25519; targets carry SHA-256 and SHA-512, and the agent checks
//     the downloaded bytes against the signed uptane.ImageHash (SHA-256), which is what the
//     declaration's hash_alg says;
//   - rollback protection: the agent refuses a target whose security version is below the
//     installed one (uptane.Decide); it protects a product only if its releases carry security
//     versions, which releasesHaveSecurityVersions says;
//   - atomic A/B with automatic rollback: the agent's default installer writes the inactive
//     slot and boots it once on trial; a trial that does not commit falls back.
func PlatformMechanism(releasesHaveSecurityVersions bool) label.Mechanism {
	return label.Mechanism{
		SignedAndVerifiedOnDevice: true,
		RollbackProtection:        releasesHaveSecurityVersions,
		AtomicAB:                  true,
		AutomaticRollback:         true,
		OfflineSigningKeys:        true,
		SignatureAlgorithm:        "ed25519",
		HashAlgorithms:            uptane.ImageHash,
		TrustAnchor:               "TUF image root and Uptane director root, both signed with offline keys",
	}
}

// labelPolicy maps the stored policy to the label's. A policy without a product name shows the
// product key; one without a model designation declares none (ETSI EN 303 645 5.3-16 is then not
// met). The owner's opt-out is claimed for automatic delivery: `upkeep-agent opt-out on` turns
// automatic installation off on the device.
func labelPolicy(p *product.Product, pol *product.Policy, hist []product.PolicyChange, m label.Manufacturer) label.Policy {
	start, _ := time.Parse(time.DateOnly, pol.SupportStart)
	lp := label.Policy{
		Product: p.Name, ProductName: cmp.Or(pol.ProductName, p.Name), ModelDesignation: pol.ModelDesignation, Manufacturer: m,
		SupportEnd: pol.End(), SupportStart: start, SupportStartBasis: pol.SupportStartBasis, JustificationUnder5y: pol.JustificationUnder5y,
		Delivery: pol.Delivery, OwnerOptOut: pol.Delivery == product.DeliveryAutomatic,
		SecuritySeparate: pol.SecuritySeparate, Notification: pol.Notification, VDPURL: pol.VDPURL, VDPContact: pol.VDPContact,
		AdvisoriesURL: pol.AdvisoriesURL, RemediationDays: pol.RemediationDays, UpdatedAt: p.UpdatedAt,
	}
	for _, c := range hist {
		lp.History = append(lp.History, label.PolicyChange{At: c.At, Actor: c.Actor, Field: c.Field, Old: c.Old, New: c.New})
	}
	return lp
}

func (s *Service) manufacturer() label.Manufacturer {
	m := s.Manufacturer
	if m.Name == "" {
		if u, err := url.Parse(s.PublicURL); err == nil && u.Hostname() != "" {
			m.Name = u.Hostname()
		} else {
			m.Name = "the operator of this update server"
		}
	}
	return m
}

// endOfDay is the last instant of t's UTC date: support lasts through the end date.
func endOfDay(t time.Time) time.Time {
	y, mo, d := t.UTC().Date()
	return time.Date(y, mo, d+1, 0, 0, 0, 0, time.UTC).Add(-time.Nanosecond)
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}
