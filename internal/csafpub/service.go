package csafpub

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"sync"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/wire"
)

// Source is where the provider reads what it publishes. Every function must be safe for
// concurrent use.
type Source struct {
	// Products lists the products with a published support policy: key and display name.
	Products func(ctx context.Context) ([][2]string, error)
	Releases func(ctx context.Context, product string) ([]Release, error)
	Triage   func(ctx context.Context, product string) ([]wire.Triage, error)
	Fixed    func(ctx context.Context, product string) ([]wire.TimeToPatch, error)
}

// Service serves the CSAF provider under /.well-known/csaf and each product's OpenVEX. It
// rebuilds (and re-signs) everything at most once per Interval.
type Service struct {
	Source    Source
	Publisher Publisher
	PublicURL string
	Signer    *Signer
	Interval  time.Duration
	Now       func() time.Time
	Logger    *slog.Logger

	mu    sync.Mutex
	built time.Time
	files map[string][]byte // path under /.well-known/csaf/ → body
	vex   map[string][]byte // product → OpenVEX
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) current(ctx context.Context) (map[string][]byte, map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	iv := s.Interval
	if iv == 0 {
		iv = time.Minute
	}
	if s.files != nil && s.now().Sub(s.built) < iv {
		return s.files, s.vex, nil
	}
	files, vex, err := s.build(ctx)
	if err != nil {
		if s.files != nil {
			if s.Logger != nil {
				s.Logger.Warn("rebuild CSAF provider; serving the last good one", "err", err)
			}
			return s.files, s.vex, nil
		}
		return nil, nil, err
	}
	s.files, s.vex, s.built = files, vex, s.now()
	return files, vex, nil
}

func (s *Service) build(ctx context.Context) (map[string][]byte, map[string][]byte, error) {
	base := strings.TrimSuffix(s.PublicURL, "/")
	files, vex := map[string][]byte{}, map[string][]byte{}
	ps, err := s.Source.Products(ctx)
	if err != nil {
		return nil, nil, err
	}
	var all []Document
	updated := time.Time{}
	for _, kn := range ps {
		p := Product{Key: kn[0], Name: kn[1]}
		if p.Releases, err = s.Source.Releases(ctx, p.Key); err != nil {
			return nil, nil, err
		}
		if p.Triage, err = s.Source.Triage(ctx, p.Key); err != nil {
			return nil, nil, err
		}
		if p.Fixed, err = s.Source.Fixed(ctx, p.Key); err != nil {
			return nil, nil, err
		}
		docs, err := Build(s.Publisher, p, base+"/.well-known/csaf/white")
		if err != nil {
			return nil, nil, err
		}
		for _, d := range docs {
			sig, err := s.Signer.Sign(d.JSON)
			if err != nil {
				return nil, nil, err
			}
			h256, h512 := Hashes(d.Name, d.JSON)
			files["white/"+d.Name], files["white/"+d.Name+".asc"] = d.JSON, sig
			files["white/"+d.Name+".sha256"], files["white/"+d.Name+".sha512"] = h256, h512
			if d.Updated.After(updated) {
				updated = d.Updated
			}
		}
		all = append(all, docs...)
		if vex[p.Key], err = OpenVEX(s.Publisher, base, p); err != nil {
			return nil, nil, err
		}
	}
	if updated.IsZero() {
		updated = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	fpr := s.Signer.Fingerprint()
	if files["provider-metadata.json"], err = ProviderMetadata(s.Publisher, base, fpr, updated); err != nil {
		return nil, nil, err
	}
	if files["feed-tlp-white.json"], err = ROLIEFeed(s.Publisher, base, all, updated); err != nil {
		return nil, nil, err
	}
	if files["openpgp/"+fpr+".asc"], err = s.Signer.PublicKey(); err != nil {
		return nil, nil, err
	}
	return files, vex, nil
}

// File returns the provider file at p (relative to /.well-known/csaf/) and its content type;
// apperr.NotFound if there is none.
func (s *Service) File(ctx context.Context, p string) ([]byte, string, error) {
	files, _, err := s.current(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("CSAF provider: %w", err)
	}
	b, ok := files[path.Clean(p)]
	if !ok {
		return nil, "", apperr.E(apperr.NotFound, "no CSAF file %s", p)
	}
	ct := "application/json"
	switch {
	case strings.HasSuffix(p, ".asc"):
		ct = "application/pgp-signature"
		if strings.HasPrefix(p, "openpgp/") {
			ct = "application/pgp-keys"
		}
	case strings.HasSuffix(p, ".sha256"), strings.HasSuffix(p, ".sha512"):
		ct = "text/plain; charset=utf-8"
	}
	return b, ct, nil
}

// OpenVEX returns a product's OpenVEX document; apperr.NotFound for an unknown product.
func (s *Service) OpenVEX(ctx context.Context, product string) ([]byte, error) {
	_, vex, err := s.current(ctx)
	if err != nil {
		return nil, fmt.Errorf("CSAF provider: %w", err)
	}
	b, ok := vex[product]
	if !ok {
		return nil, apperr.E(apperr.NotFound, "no product %s", product)
	}
	return b, nil
}

// Invalidate makes the next request rebuild (after a VEX statement or a release).
func (s *Service) Invalidate() {
	s.mu.Lock()
	s.built = time.Time{}
	s.mu.Unlock()
}
