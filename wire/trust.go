package wire

import "time"

// MetadataExpiry is when one piece of offline-signed metadata expires (GET /api/v1/trust/expiry):
// the image root and targets and the director root. Renew names the CLI command that re-signs it.
type MetadataExpiry struct {
	Repo    string    `json:"repo"` // image | director
	Role    string    `json:"role"` // root | targets
	Version int64     `json:"version"`
	Expires time.Time `json:"expires"`
	Renew   string    `json:"renew"`
}
