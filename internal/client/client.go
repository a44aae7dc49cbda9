// Package client is the operator's HTTP client for the management API, used by the `upkeep`
// CLI and the demo. It links nothing of the server.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/wire"
)

// Client calls the management API with an operator token, or with a login session: an HTTP
// client with a cookie jar, Login, and the session's CSRF token sent on every request.
type Client struct {
	Base  string // e.g. http://127.0.0.1:8080
	Token string
	HTTP  *http.Client
	CSRF  string // the login session's CSRF token (Login sets it)
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// Do sends a request; body may be nil, an io.Reader (sent raw) or a value (sent as JSON). A
// non-2xx answer becomes an *apperr.Error with the server's message.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd, ctype = b, "application/octet-stream"
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Base, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("request %s: %w", path, err)
	}
	if sz, ok := body.(interface{ Size() int64 }); ok {
		req.ContentLength = sz.Size()
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if c.CSRF != "" {
		req.Header.Set(wire.HeaderCSRF, c.CSRF)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, fmt.Sprintf("cannot reach the server at %s", c.Base))
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var we wire.Error
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&we); err != nil || we.Message == "" {
			return apperr.E(apperr.FromHTTPStatus(resp.StatusCode), "server answered %s", resp.Status)
		}
		code := apperr.Code(we.Code)
		if code == "" {
			code = apperr.FromHTTPStatus(resp.StatusCode)
		}
		return &apperr.Error{Code: code, Msg: we.Message}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		b, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxMetaBody))
		*o = b
		return err
	case io.Writer: // an artifact: streamed, its length and hashes checked by the caller
		_, err := io.Copy(o, resp.Body)
		return err
	default:
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("decode %s: %w", path, err)
		}
		return nil
	}
}

// Devices lists devices.
func (c *Client) Devices(ctx context.Context, product string) ([]wire.Device, error) {
	var out []wire.Device
	q := ""
	if product != "" {
		q = "?product=" + url.QueryEscape(product)
	}
	return out, c.Do(ctx, http.MethodGet, "/api/v1/devices"+q, nil, &out)
}

// RemoveSimulatedDevices removes every simulated device and returns how many.
func (c *Client) RemoveSimulatedDevices(ctx context.Context) (int, error) {
	var out wire.RemoveDevicesResponse
	return out.Removed, c.Do(ctx, http.MethodDelete, "/api/v1/devices?simulated=true", nil, &out)
}

// Accept admits a pending device.
func (c *Client) Accept(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/devices/"+url.PathEscape(id)+"/accept", nil, nil)
}

// Events lists a device's newest events.
func (c *Client) Events(ctx context.Context, id string) ([]wire.Event, error) {
	var out []wire.Event
	return out, c.Do(ctx, http.MethodGet, "/api/v1/devices/"+url.PathEscape(id)+"/events", nil, &out)
}

// Deploy assigns a release.
func (c *Client) Deploy(ctx context.Context, req wire.DeployRequest) (*wire.DeployResponse, error) {
	var out wire.DeployResponse
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/deployments", req, &out)
}

// Releases lists releases.
func (c *Client) Releases(ctx context.Context, product string) ([]wire.Release, error) {
	var out []wire.Release
	q := ""
	if product != "" {
		q = "?product=" + url.QueryEscape(product)
	}
	return out, c.Do(ctx, http.MethodGet, "/api/v1/releases"+q, nil, &out)
}

// CreateEnrollToken makes an enrolment token.
func (c *Client) CreateEnrollToken(ctx context.Context, req wire.EnrollTokenRequest) (*wire.EnrollTokenResponse, error) {
	var out wire.EnrollTokenResponse
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/enroll-tokens", req, &out)
}

// SetPolicy stores a product's support policy.
func (c *Client) SetPolicy(ctx context.Context, product string, policy any) (*wire.Product, error) {
	var out wire.Product
	return &out, c.Do(ctx, http.MethodPut, "/api/v1/products/"+url.PathEscape(product)+"/policy", policy, &out)
}

// Products lists products with their policies and warnings.
func (c *Client) Products(ctx context.Context) ([]wire.Product, error) {
	var out []wire.Product
	return out, c.Do(ctx, http.MethodGet, "/api/v1/products", nil, &out)
}

// PolicyHistory lists a product's policy changes, oldest first.
func (c *Client) PolicyHistory(ctx context.Context, product string) ([]wire.PolicyChange, error) {
	var out []wire.PolicyChange
	return out, c.Do(ctx, http.MethodGet, "/api/v1/products/"+url.PathEscape(product)+"/history", nil, &out)
}

// Readmit accepts a decommissioned device again (or a pending or rejected one).
func (c *Client) Readmit(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/devices/"+url.PathEscape(id)+"/accept?readmit=true", nil, nil)
}

// Reject refuses a pending device.
func (c *Client) Reject(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/devices/"+url.PathEscape(id)+"/reject", nil, nil)
}

// Decommission takes an accepted device out of service: its token stops working, the director
// serves it nothing, its history stays.
func (c *Client) Decommission(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/devices/"+url.PathEscape(id)+"/decommission", nil, nil)
}

// EnrollTokens lists enrolment tokens (never their secrets).
func (c *Client) EnrollTokens(ctx context.Context) ([]wire.EnrollToken, error) {
	var out []wire.EnrollToken
	return out, c.Do(ctx, http.MethodGet, "/api/v1/enroll-tokens", nil, &out)
}

// RevokeEnrollToken revokes an enrolment token by id.
func (c *Client) RevokeEnrollToken(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/enroll-tokens/"+url.PathEscape(id)+"/revoke", nil, nil)
}

// CreateToken makes an operator token; the answer holds its secret, shown once.
func (c *Client) CreateToken(ctx context.Context, req wire.OperatorTokenRequest) (*wire.OperatorToken, error) {
	var out wire.OperatorToken
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/tokens", req, &out)
}

// Tokens lists operator tokens (never their secrets).
func (c *Client) Tokens(ctx context.Context) ([]wire.OperatorToken, error) {
	var out []wire.OperatorToken
	return out, c.Do(ctx, http.MethodGet, "/api/v1/tokens", nil, &out)
}

// RevokeToken revokes an operator token by id.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/tokens/"+url.PathEscape(id)+"/revoke", nil, nil)
}

// CreateUser adds an operator user.
func (c *Client) CreateUser(ctx context.Context, req wire.UserRequest) (*wire.User, error) {
	var out wire.User
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/users", req, &out)
}

// Users lists operator users (never their password hashes).
func (c *Client) Users(ctx context.Context) ([]wire.User, error) {
	var out []wire.User
	return out, c.Do(ctx, http.MethodGet, "/api/v1/users", nil, &out)
}

// DisableUser disables a user: no more logins, sessions ended, tokens revoked.
func (c *Client) DisableUser(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/users/"+url.PathEscape(name)+"/disable", nil, nil)
}

// SetUserRole changes a user's role and group scope (ending their sessions and tokens).
func (c *Client) SetUserRole(ctx context.Context, name string, req wire.UserRoleRequest) error {
	return c.Do(ctx, http.MethodPut, "/api/v1/users/"+url.PathEscape(name)+"/role", req, nil)
}

// SetUserPassword sets a user's password.
func (c *Client) SetUserPassword(ctx context.Context, name, password string) error {
	return c.Do(ctx, http.MethodPut, "/api/v1/users/"+url.PathEscape(name)+"/password", wire.PasswordRequest{Password: password}, nil)
}

// Session says who the client's token belongs to: role, permissions, group scope.
func (c *Client) Session(ctx context.Context) (*wire.Session, error) {
	var out wire.Session
	return &out, c.Do(ctx, http.MethodGet, "/api/v1/session", nil, &out)
}

// Login starts a login session with a user's password; the client's HTTP client must have a
// cookie jar to keep it. It sets c.CSRF for the requests that follow.
func (c *Client) Login(ctx context.Context, user, password string) (*wire.Session, error) {
	var out wire.Session
	if err := c.Do(ctx, http.MethodPost, "/api/v1/login", wire.LoginRequest{User: user, Password: password}, &out); err != nil {
		return nil, err
	}
	c.CSRF = out.CSRFToken
	return &out, nil
}

// Logout ends the login session.
func (c *Client) Logout(ctx context.Context) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/logout", nil, nil)
}

// CreatePersonalToken makes an operator token for the session's own user (with the user's role
// and scope); the answer holds its secret, shown once.
func (c *Client) CreatePersonalToken(ctx context.Context, req wire.PersonalTokenRequest) (*wire.OperatorToken, error) {
	var out wire.OperatorToken
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/session/token", req, &out)
}

// RevokePersonalToken revokes one of the caller's own tokens (the one it calls with, say).
func (c *Client) RevokePersonalToken(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/session/tokens/"+url.PathEscape(id)+"/revoke", nil, nil)
}

// AddTenant adds a tenant (default tenant's admin only): its stack is created with the online
// key files given, and its first admin token is returned once.
func (c *Client) AddTenant(ctx context.Context, req wire.TenantRequest) (*wire.TenantCreated, error) {
	var out wire.TenantCreated
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/tenants", req, &out)
}

// Tenants lists the tenants.
func (c *Client) Tenants(ctx context.Context) ([]wire.Tenant, error) {
	var out []wire.Tenant
	return out, c.Do(ctx, http.MethodGet, "/api/v1/tenants", nil, &out)
}

// CreateWebhook creates a webhook; the answer holds its signing secret, shown once.
func (c *Client) CreateWebhook(ctx context.Context, req wire.WebhookRequest) (*wire.Webhook, error) {
	var out wire.Webhook
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/webhooks", req, &out)
}

// Webhooks lists the webhooks (never their secrets).
func (c *Client) Webhooks(ctx context.Context) ([]wire.Webhook, error) {
	var out []wire.Webhook
	return out, c.Do(ctx, http.MethodGet, "/api/v1/webhooks", nil, &out)
}

// DeleteWebhook removes a webhook and its deliveries.
func (c *Client) DeleteWebhook(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, "/api/v1/webhooks/"+url.PathEscape(id), nil, nil)
}

// TestWebhook queues a ping event for the webhook and returns the event's id.
func (c *Client) TestWebhook(ctx context.Context, id string) (string, error) {
	var out wire.WebhookTest
	return out.EventID, c.Do(ctx, http.MethodPost, "/api/v1/webhooks/"+url.PathEscape(id)+"/test", nil, &out)
}

// WebhookDeliveries lists deliveries, newest first, of one webhook and in one state ("" for
// any), at most limit (0: the server's default, 100).
func (c *Client) WebhookDeliveries(ctx context.Context, webhook, state string, limit int) ([]wire.WebhookDelivery, error) {
	q := url.Values{}
	if webhook != "" {
		q.Set("webhook", webhook)
	}
	if state != "" {
		q.Set("state", state)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/api/v1/webhooks/deliveries"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []wire.WebhookDelivery
	return out, c.Do(ctx, http.MethodGet, path, nil, &out)
}
