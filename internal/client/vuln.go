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
)

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

// ImportAdvisories uploads each path: a folder is walked for .json and .zip files (others are
// counted as skipped); a file is uploaded as it is. The server reports malformed files by name
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
			case ".json", ".zip":
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
func (c *Client) Exposure(ctx context.Context, severity, product string, all bool) (*ExposureReport, error) {
	q := url.Values{}
	if severity != "" {
		q.Set("severity", severity)
	}
	if product != "" {
		q.Set("product", product)
	}
	if all {
		q.Set("all", "true")
	}
	var out ExposureReport
	return &out, c.Do(ctx, http.MethodGet, "/api/v1/exposure?"+q.Encode(), nil, &out)
}

// TimeToPatch asks for a product's time-to-patch figures.
func (c *Client) TimeToPatch(ctx context.Context, product string) (*ProductTimeToPatch, error) {
	var out ProductTimeToPatch
	return &out, c.Do(ctx, http.MethodGet, "/api/v1/products/"+url.PathEscape(product)+"/time-to-patch", nil, &out)
}
