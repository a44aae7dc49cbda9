package client

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"upkeep.dev/upkeep/wire"

	"upkeep.dev/upkeep/internal/vuln"
)

// The management API's vulnerability answers, as the server's internal/patch writes them.

// The vulnerability API's types.
type (
	SBOMInfo           = wire.SBOMSummary
	FileError          = wire.FileError
	ImportResult       = wire.ImportResult
	Exposure           = wire.Exposure
	ExposureReport     = wire.ExposureReport
	FleetFigure        = wire.FleetFigure
	TimeToPatch        = wire.TimeToPatch
	ProductTimeToPatch = wire.ProductTimeToPatch
	ReleaseCheck       = wire.ReleaseCheck
	Triage             = wire.Triage
	Waiver             = wire.Waiver
)

// ExposureQuery selects and orders the exposure report.
type ExposureQuery struct {
	Severity, Product string
	All               bool
	KEV               bool    // known exploited only
	MinEPSS           float64 // EPSS score at least this
	Sort              string  // kev (default), severity, epss, days
}

func sbomPath(product, version string) string {
	return "/api/v1/releases/" + url.PathEscape(product) + "/" + url.PathEscape(version) + "/sbom"
}

// ReadSBOM reads and parses an SBOM file (CycloneDX 1.2–1.6 or SPDX 2.2–2.3 JSON).
func ReadSBOM(path string) ([]byte, *vuln.SBOM, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read SBOM: %w", err)
	}
	sb, err := vuln.ParseSBOM(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("SBOM %s: %w (want CycloneDX 1.2–1.6 or SPDX 2.2–2.3 JSON)", path, err)
	}
	return raw, sb, nil
}

// AttachSBOM uploads the SBOM file of product@version. The server refuses it if the release's
// signed target names another SBOM digest.
func (c *Client) AttachSBOM(ctx context.Context, product, version, path string) (*SBOMInfo, error) {
	raw, _, err := ReadSBOM(path)
	if err != nil {
		return nil, err
	}
	return c.putSBOM(ctx, product, version, raw)
}

func (c *Client) putSBOM(ctx context.Context, product, version string, raw []byte) (*SBOMInfo, error) {
	var out SBOMInfo
	return &out, c.Do(ctx, http.MethodPut, sbomPath(product, version), sized{bytes.NewReader(raw), int64(len(raw))}, &out)
}

// SBOM describes the stored SBOM of product@version.
func (c *Client) SBOM(ctx context.Context, product, version string) (*SBOMInfo, error) {
	var out SBOMInfo
	return &out, c.Do(ctx, http.MethodGet, sbomPath(product, version), nil, &out)
}

// ImportAdvisories uploads each path: a folder is walked for .json, .yaml, .yml, .zip, .csv and
// .gz files (others are counted as skipped); a file is uploaded as it is. The server reports malformed files by name
// and goes on.
func (c *Client) ImportAdvisories(ctx context.Context, paths ...string) (*ImportResult, error) {
	total := &ImportResult{}
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return total, fmt.Errorf("advisories: %w", err)
		}
		if !info.IsDir() {
			if err := c.importFile(ctx, p, total); err != nil {
				return total, err
			}
			continue
		}
		err = filepath.WalkDir(p, func(f string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			switch strings.ToLower(filepath.Ext(f)) {
			case ".json", ".zip", ".yaml", ".yml", ".csv", ".gz":
				return c.importFile(ctx, f, total)
			}
			total.Skipped++
			return nil
		})
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (c *Client) importFile(ctx context.Context, path string, total *ImportResult) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("advisories: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("advisories: %w", err)
	}
	var res ImportResult
	if err := c.Do(ctx, http.MethodPost, "/api/v1/advisories?name="+url.QueryEscape(path), sized{f, st.Size()}, &res); err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	total.Add(res)
	return nil
}

// Exposure asks which advisories affect releases that devices run.
func (c *Client) Exposure(ctx context.Context, f ExposureQuery) (*ExposureReport, error) {
	q := url.Values{}
	if f.Severity != "" {
		q.Set("severity", f.Severity)
	}
	if f.Product != "" {
		q.Set("product", f.Product)
	}
	if f.All {
		q.Set("all", "true")
	}
	if f.KEV {
		q.Set("kev", "true")
	}
	if f.MinEPSS > 0 {
		q.Set("min_epss", strconv.FormatFloat(f.MinEPSS, 'f', -1, 64))
	}
	if f.Sort != "" {
		q.Set("sort", f.Sort)
	}
	var out ExposureReport
	return &out, c.Do(ctx, http.MethodGet, "/api/v1/exposure?"+q.Encode(), nil, &out)
}

// TimeToPatch asks for a product's time-to-patch figures.
func (c *Client) TimeToPatch(ctx context.Context, product string) (*ProductTimeToPatch, error) {
	var out ProductTimeToPatch
	return &out, c.Do(ctx, http.MethodGet, "/api/v1/products/"+url.PathEscape(product)+"/time-to-patch", nil, &out)
}

// CheckRelease sends an SBOM file to be matched as product@version (version may be empty) and
// returns the findings and the product's release gate verdict. No device is needed.
func (c *Client) CheckRelease(ctx context.Context, product, version, path string) (*ReleaseCheck, error) {
	raw, _, err := ReadSBOM(path)
	if err != nil {
		return nil, err
	}
	return c.checkRelease(ctx, product, version, raw)
}

func (c *Client) checkRelease(ctx context.Context, product, version string, raw []byte) (*ReleaseCheck, error) {
	q := url.Values{"product": {product}}
	if version != "" {
		q.Set("version", version)
	}
	var out ReleaseCheck
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/releases/check?"+q.Encode(), sized{bytes.NewReader(raw), int64(len(raw))}, &out)
}

// SetVEX records an analyst's VEX statement.
func (c *Client) SetVEX(ctx context.Context, t Triage) (*Triage, error) {
	var out Triage
	return &out, c.Do(ctx, http.MethodPut, "/api/v1/products/"+url.PathEscape(t.Product)+"/vex", t, &out)
}

// VEX lists a product's analyst statements.
func (c *Client) VEX(ctx context.Context, product string) ([]Triage, error) {
	var out []Triage
	return out, c.Do(ctx, http.MethodGet, "/api/v1/products/"+url.PathEscape(product)+"/vex", nil, &out)
}

// AddWaiver records a waiver of the release gate.
func (c *Client) AddWaiver(ctx context.Context, w Waiver) (*Waiver, error) {
	var out Waiver
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/waivers", w, &out)
}

// Waivers lists the waivers of product ("" for all).
func (c *Client) Waivers(ctx context.Context, product string) ([]Waiver, error) {
	var out []Waiver
	return out, c.Do(ctx, http.MethodGet, "/api/v1/waivers?product="+url.QueryEscape(product), nil, &out)
}

// RevokeWaiver revokes a waiver, naming who does.
func (c *Client) RevokeWaiver(ctx context.Context, id, by string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/waivers/"+url.PathEscape(id)+"/revoke", wire.RevokeWaiverRequest{By: by}, nil)
}
