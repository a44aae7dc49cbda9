package httpapi

import (
	"context"
	"net/http"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/wire"
)

// Personal tokens: an operator token a logged-in user makes for themselves (`upkeep login`),
// with their own role and group scope and a short life. It is revoked with the user's other
// tokens when the user is disabled or changes role.
const (
	DefaultPersonalTTL = 12 * time.Hour
	MaxPersonalTTL     = 7 * 24 * time.Hour
)

func (s *Server) personalTokenRoutes(mux *router) {
	mux.api("POST /api/v1/session/token", auth.PermSelf, s.createPersonalToken)
	mux.api("POST /api/v1/session/tokens/{id}/revoke", auth.PermSelf, s.revokePersonalToken)
}

// createPersonalToken makes a token bound to the session's user. Only a login session may: a
// token that could make tokens would outlive its own expiry.
func (s *Server) createPersonalToken(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	if p.Session == nil || p.User == "" {
		s.fail(w, r, apperr.E(apperr.Invalid, "a personal token is made from a login session (POST /api/v1/login), not with a token"))
		return
	}
	var req wire.PersonalTokenRequest
	if r.ContentLength != 0 { // no body: the defaults
		if err := decode(w, r, 4<<10, &req); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	switch {
	case len(req.Name) > 64:
		s.fail(w, r, apperr.E(apperr.Invalid, "a token name has at most 64 characters"))
		return
	case req.TTL < 0 || req.TTL > MaxPersonalTTL:
		s.fail(w, r, apperr.E(apperr.Invalid, "ttl must be between 0 (the default, %s) and %s", DefaultPersonalTTL, MaxPersonalTTL))
		return
	}
	if req.TTL == 0 {
		req.TTL = DefaultPersonalTTL
	}
	if req.Name == "" {
		req.Name = "login " + p.User
	}
	out, err := s.newPersonalToken(r.Context(), p.User, p.Role, p.Groups, req.Name, req.TTL)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

// newPersonalToken makes a token of user with their role and scope; the answer holds its secret.
func (s *Server) newPersonalToken(ctx context.Context, user, role string, groups []string, name string, ttl time.Duration) (wire.OperatorToken, error) {
	secret, hash := auth.NewSecret(auth.AdminPrefix)
	now := s.now()
	t := &auth.OperatorToken{ID: auth.TokenID(hash), Name: name, Role: role, Hash: hash, CreatedAt: now, ExpiresAt: now.Add(ttl).Truncate(time.Second),
		User: user, Groups: groups}
	if err := s.Admin.CreateOperatorToken(ctx, t); err != nil {
		return wire.OperatorToken{}, err
	}
	s.logger().Info("personal token created", "token", t.ID, "user", user, "role", t.Role)
	out := operatorToWire(t)
	out.Token = secret
	return out, nil
}

// revokePersonalToken revokes the caller's own token, or a token of the caller's user. Any
// other id is 404, whether or not such a token exists.
func (s *Server) revokePersonalToken(w http.ResponseWriter, r *http.Request) {
	p, id := principalOf(r), r.PathValue("id")
	mine := p.Token != nil && p.Token.ID == id
	if !mine && p.User != "" {
		ts, err := s.Admin.FindOperatorTokens(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, t := range ts {
			mine = mine || (t.ID == id && t.User == p.User)
		}
	}
	if !mine {
		s.fail(w, r, apperr.E(apperr.NotFound, "you have no token %.16q", id))
		return
	}
	if err := s.Admin.RevokeOperatorToken(r.Context(), id, s.now()); err != nil {
		s.fail(w, r, err)
		return
	}
	s.ForgetOperators()
	s.logger().Info("personal token revoked", "token", id, "actor", actorOf(r))
	w.WriteHeader(http.StatusNoContent)
}
