package httpapi

import (
	"cmp"
	"context"
	"net/http"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/wire"
)

// Operator tokens: defaults and bounds of a new token's lifetime.
const (
	DefaultOperatorTTL = 90 * 24 * time.Hour
	MaxOperatorTTL     = 366 * 24 * time.Hour
)

// operatorCacheTTL is how long a verified operator token is trusted without reading the store
// again when no revocation generation is followed (Server.Generation nil).
const operatorCacheTTL = 500 * time.Millisecond

// cachedOperator is an operator token that verified, with when and at which revocation
// generation it was read.
type cachedOperator struct {
	tok  *auth.OperatorToken
	gen  int64
	read time.Time
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// operator returns the active operator token with this secret, from the cache if it is fresh.
func (s *Server) operator(ctx context.Context, secret string) (*auth.OperatorToken, error) {
	hash := auth.HashSecret(secret)
	now := s.now()
	gen := int64(0)
	if s.Generation != nil {
		gen = s.Generation()
	}
	if v, ok := s.admins.Load(string(hash)); ok {
		c := v.(*cachedOperator)
		fresh := c.gen == gen
		if s.Generation == nil {
			fresh = now.Sub(c.read) < operatorCacheTTL
		}
		if fresh && c.tok.Active(now) {
			return c.tok, nil
		}
		s.admins.Delete(string(hash))
	}
	tok, err := s.Admin.FindOperatorToken(ctx, hash)
	if apperr.Is(err, apperr.NotFound) {
		return nil, apperr.E(apperr.Unauthorized, "unknown operator token")
	}
	if err != nil {
		return nil, err
	}
	switch {
	case !tok.RevokedAt.IsZero():
		return nil, apperr.E(apperr.Unauthorized, "operator token %s was revoked", tok.ID)
	case !tok.Active(now):
		return nil, apperr.E(apperr.Unauthorized, "operator token %s expired at %s", tok.ID, tok.ExpiresAt.Format(time.RFC3339))
	}
	s.admins.Store(string(hash), &cachedOperator{tok: tok, gen: gen, read: now})
	return tok, nil
}

// ForgetOperators drops every cached operator token and login session (after a revocation on
// this replica).
func (s *Server) ForgetOperators() { s.forgetCredentials() }

func (s *Server) markUsed(id string) {
	now := s.now()
	s.usedMu.Lock()
	if s.used == nil {
		s.used = map[string]time.Time{}
	}
	s.used[id] = now
	s.usedMu.Unlock()
}

// FlushTokenUse writes the operator tokens' last-use times gathered since the last flush (the
// server calls it every few seconds); on failure they are kept for the next one.
func (s *Server) FlushTokenUse(ctx context.Context) error {
	s.usedMu.Lock()
	used := s.used
	s.used = nil
	s.usedMu.Unlock()
	if len(used) == 0 {
		return nil
	}
	if err := s.Admin.TouchOperatorTokens(ctx, used); err != nil {
		s.usedMu.Lock()
		for id, t := range used {
			if cur, ok := s.used[id]; !ok || cur.Before(t) {
				if s.used == nil {
					s.used = map[string]time.Time{}
				}
				s.used[id] = t
			}
		}
		s.usedMu.Unlock()
		return err
	}
	return nil
}

func (s *Server) tokenRoutes(mux *router) {
	mux.api("GET /api/v1/tokens", auth.PermTokensRead, s.listOperatorTokens)
	mux.api("POST /api/v1/tokens", auth.PermTokensWrite, s.createOperatorToken)
	mux.api("POST /api/v1/tokens/{id}/revoke", auth.PermTokensWrite, s.revokeOperatorToken)
}

func operatorToWire(t *auth.OperatorToken) wire.OperatorToken {
	return wire.OperatorToken{ID: t.ID, Name: t.Name, Role: t.Role, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt, LastUsed: t.LastUsed, User: t.User, Groups: t.Groups}
}

func (s *Server) createOperatorToken(w http.ResponseWriter, r *http.Request) {
	var req wire.OperatorTokenRequest
	if err := decode(w, r, wire.MaxAPIBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	t, secret, err := s.newOperatorToken(r, req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := operatorToWire(t)
	out.Token = secret
	writeJSON(w, http.StatusCreated, out)
}

// newOperatorToken checks and stores an operator token for the caller (POST /api/v1/tokens and
// the console's form): a name, a role the caller's groups allow, a lifetime within
// MaxOperatorTTL (0: DefaultOperatorTTL). It returns the token and its secret, which is shown
// once.
func (s *Server) newOperatorToken(r *http.Request, req wire.OperatorTokenRequest) (*auth.OperatorToken, string, error) {
	switch {
	case req.Name == "" || len(req.Name) > 64:
		return nil, "", apperr.E(apperr.Invalid, "a token needs a name of 1-64 characters")
	case checkRole(req.Role, req.Groups) != nil:
		return nil, "", checkRole(req.Role, req.Groups)
	case req.TTL < 0 || req.TTL > MaxOperatorTTL:
		return nil, "", apperr.E(apperr.Invalid, "ttl must be between 0 (the default, %s) and %s", DefaultOperatorTTL, MaxOperatorTTL)
	}
	ttl := cmp.Or(req.TTL, DefaultOperatorTTL)
	secret, hash := auth.NewSecret(auth.AdminPrefix)
	now := s.now()
	t := &auth.OperatorToken{ID: auth.TokenID(hash), Name: req.Name, Role: req.Role, Hash: hash, CreatedAt: now, ExpiresAt: now.Add(ttl).Truncate(time.Second),
		User: principalOf(r).User, Groups: req.Groups}
	if err := s.Admin.CreateOperatorToken(r.Context(), t); err != nil {
		return nil, "", err
	}
	audit.SetTarget(r.Context(), t.ID)
	audit.AddDetail(r.Context(), "role", t.Role)
	s.logger().Info("operator token created", "token", t.ID, "role", t.Role, "actor", actorOf(r))
	return t, secret, nil
}

// revokeOperatorTokenOf revokes the operator token the path's {id} names (the API and the
// console's form), and forgets it at once here; other replicas when they read the new generation.
func (s *Server) revokeOperatorTokenOf(r *http.Request) error {
	id := r.PathValue("id")
	if err := s.Admin.RevokeOperatorToken(r.Context(), id, s.now()); err != nil {
		return err
	}
	s.ForgetOperators()
	s.logger().Info("operator token revoked", "token", id, "actor", actorOf(r))
	return nil
}

func (s *Server) listOperatorTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := s.Admin.FindOperatorTokens(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.OperatorToken, len(ts))
	for i, t := range ts {
		out[i] = operatorToWire(t)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) revokeOperatorToken(w http.ResponseWriter, r *http.Request) {
	if err := s.revokeOperatorTokenOf(r); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func enrollTokenToWire(t *fleet.EnrollToken) wire.EnrollToken {
	return wire.EnrollToken{ID: t.ID, Name: t.Name, Product: t.Product, UsesLeft: t.UsesLeft, ExpiresAt: t.ExpiresAt, CreatedAt: t.CreatedAt, RevokedAt: t.RevokedAt}
}

func (s *Server) listEnrollTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := s.Devices.FindEnrollTokens(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.EnrollToken, len(ts))
	for i, t := range ts {
		out[i] = enrollTokenToWire(t)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) revokeEnrollToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.Devices.RevokeEnrollToken(r.Context(), id, s.now()); err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("enrolment token revoked", "token", id, "actor", r.Context().Value(keyActor))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) rejectDevice(w http.ResponseWriter, r *http.Request) {
	s.deviceAction(w, r, "rejected", s.Fleet.Reject)
}

func (s *Server) decommissionDevice(w http.ResponseWriter, r *http.Request) {
	s.deviceAction(w, r, "decommissioned", s.Fleet.Decommission)
}

// deviceAction runs an operator's status change of the device in the path: 204 when done.
func (s *Server) deviceAction(w http.ResponseWriter, r *http.Request, what string, act func(ctx context.Context, id string) error) {
	id := r.PathValue("id")
	if err := act(r.Context(), id); err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("device "+what, LogDevice, id, "actor", r.Context().Value(keyActor))
	w.WriteHeader(http.StatusNoContent)
}
