// Package sso logs operators in through an OpenID Connect provider (single sign-on): the
// authorization code flow with PKCE (S256), state and nonce (OpenID Connect Core 1.0 §3.1, RFC
// 7636); the ID token verified for signature, issuer, audience, expiry and nonce (Core
// §3.1.3.7); the claims mapped to a role (Rule); the user row created or updated by issuer and
// subject. The protocol work is github.com/coreos/go-oidc and golang.org/x/oauth2; what is
// written here is the glue those libraries leave to their user (the login attempt's cookie,
// the nonce comparison, the role map, the user row).
package sso

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
)

// Defaults.
const (
	// AttemptTTL is how long a login attempt (the cookie holding its state, nonce and PKCE
	// verifier) may take from the redirect to the callback.
	AttemptTTL = 10 * time.Minute
	// retryDiscovery is how long a failed discovery is remembered before the provider is asked
	// again, so that logins while it is down do not each call it.
	retryDiscovery = 5 * time.Second
	// DefaultUsernameClaim names the claim that gives a new user their name (else "email").
	DefaultUsernameClaim = "preferred_username"
)

// Config configures single sign-on against one provider.
type Config struct {
	Issuer       string // the provider's issuer URL, exactly as its discovery document says it
	ClientID     string
	ClientSecret string
	// RedirectURL is this server's callback, registered at the provider:
	// https://HOST/api/v1/oidc/callback.
	RedirectURL string
	// Scopes requested besides "openid"; default profile and email. Add "groups" for providers
	// that give groups only when asked.
	Scopes []string
	// RoleMap maps claims to roles; the first matching rule wins. No match: no login.
	RoleMap []Rule
	// UsernameClaim names the claim a new user's name is taken from (default
	// preferred_username, then email); the name is set once, at the first login.
	UsernameClaim string
	// HTTPClient talks to the provider (discovery, keys, token and userinfo endpoints); nil: a
	// client with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock of token expiry and user rows; nil: time.Now.
	Now func() time.Time
}

// Enabled reports whether single sign-on is configured.
func (c Config) Enabled() bool { return c.Issuer != "" }

// Validate names the first bad field.
func (c Config) Validate() error {
	u, err := url.Parse(c.Issuer)
	switch {
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		return fmt.Errorf("oidc issuer %q: want an https:// URL", c.Issuer)
	case u.Scheme == "http" && !loopback(u.Hostname()):
		return fmt.Errorf("oidc issuer %q: plain http only on a loopback address", c.Issuer)
	case c.ClientID == "":
		return errors.New("oidc client id: required with an issuer")
	case c.RedirectURL == "":
		return errors.New("oidc redirect url: required with an issuer")
	case len(c.RoleMap) == 0:
		return errors.New("oidc role map: at least one CLAIM:VALUE=ROLE rule is required, or no one could log in")
	}
	if r, err := url.Parse(c.RedirectURL); err != nil || (r.Scheme != "https" && r.Scheme != "http") || r.Host == "" {
		return fmt.Errorf("oidc redirect url %q: want an absolute URL", c.RedirectURL)
	}
	return nil
}

func loopback(host string) bool {
	return host == "localhost" || host == "::1" || strings.HasPrefix(host, "127.")
}

// Attempt is one login attempt: the state that binds the callback to the browser that started
// it (login CSRF), the nonce that binds the ID token to it (token substitution), and the PKCE
// verifier that binds the code to it (code injection). It travels in a short-lived HttpOnly
// cookie, so that any replica can finish it.
type Attempt struct {
	State, Nonce, Verifier string
	CLI                    CLI // the command line to hand a token to; zero for a browser login
}

const attemptVersion = "v1"

// NewAttempt draws a new attempt's secrets.
func NewAttempt() Attempt {
	return Attempt{State: random(), Nonce: random(), Verifier: oauth2.GenerateVerifier()}
}

func random() string {
	b := make([]byte, 24)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Encode is the attempt's cookie value: v1.STATE.NONCE.VERIFIER, then .PORT.KEY for a CLI.
func (a Attempt) Encode() string {
	parts := []string{attemptVersion, a.State, a.Nonce, a.Verifier}
	if a.CLI.Port != 0 {
		parts = append(parts, strconv.Itoa(a.CLI.Port), a.CLI.Key)
	}
	return strings.Join(parts, ".")
}

var attemptPart = regexp.MustCompile(`^[A-Za-z0-9_-]{22,128}$`)

// ErrBadAttempt is the answer to a callback whose cookie is missing, malformed or not the
// attempt its state names.
var ErrBadAttempt = apperr.E(apperr.Invalid, "no login attempt of this browser matches the callback (missing or expired cookie, or a wrong state): start again at /api/v1/oidc/login")

// DecodeAttempt parses a cookie value made by Encode. It is the parser of what a browser sends
// back; anything but the exact form is ErrBadAttempt.
func DecodeAttempt(s string) (Attempt, error) {
	if len(s) > 512 {
		return Attempt{}, ErrBadAttempt
	}
	parts := strings.Split(s, ".")
	if (len(parts) != 4 && len(parts) != 6) || parts[0] != attemptVersion {
		return Attempt{}, ErrBadAttempt
	}
	for _, p := range parts[1:4] {
		if !attemptPart.MatchString(p) {
			return Attempt{}, ErrBadAttempt
		}
	}
	a := Attempt{State: parts[1], Nonce: parts[2], Verifier: parts[3]}
	if len(parts) == 6 {
		port, err := strconv.Atoi(parts[4])
		a.CLI = CLI{Port: port, Key: parts[5]}
		if err != nil || strconv.Itoa(port) != parts[4] || a.CLI.Check() != nil || base64.RawURLEncoding.EncodeToString(mustDecode(parts[5])) != parts[5] {
			return Attempt{}, ErrBadAttempt
		}
	}
	return a, nil
}

func mustDecode(s string) []byte {
	b, _ := base64.RawURLEncoding.DecodeString(s)
	return b
}

// Service runs logins against the configured provider. It is safe for concurrent use.
type Service struct {
	cfg    Config
	users  auth.UserStore
	logger *slog.Logger

	mu       sync.Mutex
	provider *oidc.Provider
	failed   time.Time // last failed discovery
	failErr  error
}

// New returns the service; the provider is discovered at the first login, so that the server
// starts while it is down.
func New(cfg Config, users auth.UserStore, logger *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{oidc.ScopeOpenID, "profile", "email"}
	} else if !slices.Contains(cfg.Scopes, oidc.ScopeOpenID) {
		cfg.Scopes = append([]string{oidc.ScopeOpenID}, cfg.Scopes...)
	}
	if cfg.UsernameClaim == "" {
		cfg.UsernameClaim = DefaultUsernameClaim
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, users: users, logger: logger}, nil
}

func (s *Service) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Service) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, s.cfg.HTTPClient)
}

var errProviderDown = apperr.E(apperr.Unavailable, "the identity provider cannot be reached: try again later")

// discover returns the provider, reading its discovery document (OpenID Connect Discovery
// 1.0 §4) the first time; its issuer must be the configured one.
func (s *Service) discover(ctx context.Context) (*oidc.Provider, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.provider != nil {
		return s.provider, nil
	}
	if !s.failed.IsZero() && time.Since(s.failed) < retryDiscovery {
		return nil, apperr.Wrap(apperr.Unavailable, s.failErr, errProviderDown.Msg)
	}
	// The key set go-oidc keeps uses the client of this context, not its deadline.
	p, err := oidc.NewProvider(s.ctx(context.WithoutCancel(ctx)), s.cfg.Issuer)
	if err != nil {
		s.failed, s.failErr = time.Now(), err
		s.logger.Warn("oidc discovery failed", "issuer", s.cfg.Issuer, "err", err)
		return nil, apperr.Wrap(apperr.Unavailable, err, errProviderDown.Msg)
	}
	s.provider = p
	return p, nil
}

func (s *Service) oauth(p *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{ClientID: s.cfg.ClientID, ClientSecret: s.cfg.ClientSecret, RedirectURL: s.cfg.RedirectURL,
		Endpoint: p.Endpoint(), Scopes: s.cfg.Scopes}
}

// Begin starts a login: the provider's authorization URL to send the browser to, and the
// attempt's cookie value. cli, if not zero, is the command line the login ends at. Returns
// apperr.Invalid for a bad cli, apperr.Unavailable if the provider cannot be reached.
func (s *Service) Begin(ctx context.Context, cli CLI) (redirect, cookie string, err error) {
	if cli != (CLI{}) {
		if err := cli.Check(); err != nil {
			return "", "", apperr.Wrap(apperr.Invalid, err, err.Error())
		}
	}
	p, err := s.discover(ctx)
	if err != nil {
		return "", "", err
	}
	a := NewAttempt()
	a.CLI = cli
	// OpenID Connect Core §3.1.2.1 (state, nonce), RFC 7636 §4.3 (code_challenge, S256).
	u := s.oauth(p).AuthCodeURL(a.State, oidc.Nonce(a.Nonce), oauth2.S256ChallengeOption(a.Verifier))
	return u, a.Encode(), nil
}

// Callback is what the provider's redirect and the browser bring back.
type Callback struct {
	Cookie string // the attempt's cookie value (Begin)
	State  string // query "state"
	Code   string // query "code"
	// Error is the provider's query "error" (RFC 6749 §4.1.2.1), set when it refused.
	Error string
}

var (
	errRefused  = apperr.E(apperr.Unauthorized, "the identity provider did not log you in: start again")
	errExchange = apperr.E(apperr.Unauthorized, "the identity provider refused the login code (used, expired or not this server's): start again")
	errIDToken  = apperr.E(apperr.Unauthorized, "the identity provider's answer did not verify: no login")
	errUnmapped = apperr.E(apperr.Forbidden, "your identity provider account maps to no Upkeep role: ask an administrator to add a --oidc-role-map rule for you")
	errDisabled = apperr.E(apperr.Forbidden, "this account is disabled: ask an administrator")
)

const badUserName = "your identity provider account gives no usable user name (claim %s or email: 1-64 letters, digits, '.', '_', '@', '-')"

var providerErrorCode = regexp.MustCompile(`^[a-z_]{1,64}$`)

// Finish completes a login and returns the user and the attempt's CLI (zero for a browser
// login): it checks the state against the attempt, exchanges the code (with
// the PKCE verifier), verifies the ID token and its nonce, reads the claims (the ID token's,
// then the userinfo endpoint's for the same subject), maps them to a role and creates or
// updates the user. Errors are apperr: Invalid for a bad or missing attempt or state,
// Unauthorized for a refusal of the provider or an answer that does not verify, Forbidden for
// an unmapped or disabled account, Conflict for a user name another account holds,
// Unavailable when the provider cannot be reached. Their messages name no code, state, key,
// token or claim (but the person's own user name in a Conflict); the causes are wrapped for the
// log.
func (s *Service) Finish(ctx context.Context, cb Callback) (*auth.User, CLI, error) {
	a, err := DecodeAttempt(cb.Cookie)
	if err != nil {
		return nil, CLI{}, err
	}
	u, err := s.finish(ctx, a, cb)
	return u, a.CLI, err
}

func (s *Service) finish(ctx context.Context, a Attempt, cb Callback) (*auth.User, error) {
	// RFC 6749 §10.12: the state must be the one this browser's attempt holds.
	if subtle.ConstantTimeCompare([]byte(cb.State), []byte(a.State)) != 1 {
		return nil, ErrBadAttempt
	}
	if cb.Error != "" {
		if providerErrorCode.MatchString(cb.Error) {
			return nil, apperr.E(apperr.Unauthorized, "the identity provider did not log you in (%s): start again", cb.Error)
		}
		return nil, errRefused
	}
	if cb.Code == "" || len(cb.Code) > 4096 {
		return nil, apperr.E(apperr.Invalid, "the callback has no authorization code")
	}
	p, err := s.discover(ctx)
	if err != nil {
		return nil, err
	}
	ctx = s.ctx(ctx)
	// RFC 7636 §4.5: the verifier proves this server started the attempt the code was issued to.
	tok, err := s.oauth(p).Exchange(ctx, cb.Code, oauth2.VerifierOption(a.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return nil, apperr.Wrap(apperr.Unauthorized, err, errExchange.Msg)
		}
		return nil, apperr.Wrap(apperr.Unavailable, err, errProviderDown.Msg)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, apperr.Wrap(apperr.Unauthorized, errors.New("token response without id_token"), errIDToken.Msg)
	}
	// OpenID Connect Core §3.1.3.7: signature by the issuer's keys, iss, aud, exp.
	idt, err := p.Verifier(&oidc.Config{ClientID: s.cfg.ClientID, Now: s.now}).Verify(ctx, raw)
	if err != nil {
		return nil, apperr.Wrap(apperr.Unauthorized, err, errIDToken.Msg)
	}
	// Core §3.1.3.7 step 11: the nonce must be the one this attempt sent.
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(a.Nonce)) != 1 {
		return nil, apperr.Wrap(apperr.Unauthorized, errors.New("id token nonce mismatch"), errIDToken.Msg)
	}
	// Core §3.2.2.9: at_hash, when present, binds the access token used for userinfo.
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return nil, apperr.Wrap(apperr.Unauthorized, err, errIDToken.Msg)
		}
	}
	if idt.Subject == "" {
		return nil, apperr.Wrap(apperr.Unauthorized, errors.New("id token without sub"), errIDToken.Msg)
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, apperr.Wrap(apperr.Unauthorized, err, errIDToken.Msg)
	}
	// Core §3.1.3.7 steps 4-5: a token for several audiences must name this client as its
	// authorized party (go-oidc checks only that the client is among the audiences).
	if azp, _ := claims["azp"].(string); len(idt.Audience) > 1 && azp != s.cfg.ClientID {
		return nil, apperr.Wrap(apperr.Unauthorized, errors.New("id token for several audiences without this client as azp"), errIDToken.Msg)
	}
	if p.UserInfoEndpoint() != "" {
		ui, err := p.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return nil, apperr.Wrap(apperr.Unavailable, err, "the identity provider's userinfo endpoint failed: try again later")
		}
		// Core §5.3.2: the userinfo sub must be the ID token's, or its claims are not this user's.
		if ui.Subject != idt.Subject {
			return nil, apperr.Wrap(apperr.Unauthorized, errors.New("userinfo sub differs from the id token's"), errIDToken.Msg)
		}
		more := map[string]any{}
		if err := ui.Claims(&more); err == nil {
			for k, v := range more {
				if _, ok := claims[k]; !ok {
					claims[k] = v
				}
			}
		}
	}
	rule, ok := Match(s.cfg.RoleMap, claims)
	if !ok {
		return nil, apperr.Wrap(apperr.Forbidden, fmt.Errorf("subject %s matches no role rule", idt.Subject), errUnmapped.Msg)
	}
	return s.provision(ctx, idt.Issuer, idt.Subject, claims, rule)
}

// provision creates the user of a first login, or brings an existing one's role and scope in
// line with the role map; a disabled user stays disabled and is refused.
func (s *Service) provision(ctx context.Context, issuer, subject string, claims map[string]any, rule Rule) (*auth.User, error) {
	u, err := s.users.FindUserBySubject(ctx, issuer, subject)
	switch {
	case apperr.Is(err, apperr.NotFound):
		name := s.userName(claims)
		if name == "" {
			return nil, apperr.E(apperr.Forbidden, badUserName, s.cfg.UsernameClaim)
		}
		u = &auth.User{Name: name, Role: rule.Role, Groups: rule.Groups, CreatedAt: s.now(), Issuer: issuer, Subject: subject}
		if err := s.users.CreateUser(ctx, u); err != nil {
			if apperr.Is(err, apperr.Conflict) {
				return nil, apperr.Wrap(apperr.Conflict, err, fmt.Sprintf("the user name %s belongs to another account: ask an administrator", name))
			}
			return nil, err
		}
		s.logger.Info("sso user created", "user", u.Name, "role", u.Role, "issuer", issuer)
		return u, nil
	case err != nil:
		return nil, err
	}
	if !u.DisabledAt.IsZero() {
		return nil, errDisabled
	}
	if u.Role != rule.Role || !slices.Equal(u.Groups, rule.Groups) {
		groups := rule.Groups
		if err := s.users.UpdateUser(ctx, u.Name, auth.UserUpdate{Role: &rule.Role, Groups: &groups}, s.now()); err != nil {
			return nil, err
		}
		s.logger.Info("sso user role changed", "user", u.Name, "from", u.Role, "role", rule.Role)
		u.Role, u.Groups = rule.Role, groups
	}
	return u, nil
}

// userName is a new user's name: the configured claim, else the email claim, if it is a valid
// user name.
func (s *Service) userName(claims map[string]any) string {
	for _, c := range []string{s.cfg.UsernameClaim, "email"} {
		if v, ok := claims[c].(string); ok && auth.ValidUserName(v) {
			return v
		}
	}
	return ""
}
