package auth

import (
	"context"
	"regexp"
	"time"
)

var userName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ValidUserName reports whether name can name a user: 1-64 letters, digits, '.', '_', '@',
// '-', starting with a letter or digit.
func ValidUserName(name string) bool { return userName.MatchString(name) }

// User is a person (or a service account) who operates the server: a role, an optional group
// scope, and an argon2id password hash for logging in (empty: the user cannot log in with a
// password, only use tokens).
type User struct {
	Name         string
	Role         string
	Groups       []string // group scope (role deployer only)
	PasswordHash string
	CreatedAt    time.Time
	DisabledAt   time.Time // zero: enabled
	// Issuer and Subject name the user at an OpenID Connect provider (single sign-on): the
	// provider's issuer URL and the subject it gave them. Empty for local users.
	Issuer, Subject string
}

// UserUpdate changes a user. Nil fields stay as they are.
type UserUpdate struct {
	Role         *string
	Groups       *[]string
	PasswordHash *string
	Disable      bool
}

// Session is a logged-in user's browser session. The cookie holds a secret; the store only its
// SHA-256 (Hash), and ID is its first 8 bytes in hex.
type Session struct {
	ID        string
	Hash      []byte
	User      string
	CSRF      string // the token state-changing requests must send in X-CSRF-Token
	CreatedAt time.Time
	ExpiresAt time.Time // absolute end
	LastSeen  time.Time // idle timeout counts from here; written at most once a minute
	RevokedAt time.Time
}

// UserStore persists users and sessions. Implementations are safe for concurrent use.
type UserStore interface {
	// CreateUser stores a user. Returns apperr.Conflict if the name, or the issuer and subject,
	// are taken.
	CreateUser(ctx context.Context, u *User) error
	// FindUser returns a user, disabled ones included, or apperr.NotFound.
	FindUser(ctx context.Context, name string) (*User, error)
	// FindUserBySubject returns the user an OpenID Connect provider knows as subject, disabled
	// ones included, or apperr.NotFound.
	FindUserBySubject(ctx context.Context, issuer, subject string) (*User, error)
	// FindUsers lists every user by name.
	FindUsers(ctx context.Context) ([]*User, error)
	// UpdateUser changes a user at at. A change of role or group scope, and disabling, revoke
	// the user's sessions and operator tokens and move the revocation generation, in one
	// transaction. Returns apperr.NotFound if there is no such user, and apperr.Conflict if the
	// change would leave no enabled admin user.
	UpdateUser(ctx context.Context, name string, up UserUpdate, at time.Time) error
	// CreateSession stores a session.
	CreateSession(ctx context.Context, s *Session) error
	// FindSession returns the session with this hash, expired or revoked ones included, or
	// apperr.NotFound.
	FindSession(ctx context.Context, hash []byte) (*Session, error)
	// TouchSession records the session's last use (never moving it back).
	TouchSession(ctx context.Context, id string, at time.Time) error
	// RevokeSession ends a session at at and moves the revocation generation. Unknown or
	// already revoked: no error.
	RevokeSession(ctx context.Context, id string, at time.Time) error
	// PruneSessions deletes the sessions that expired, or were revoked, before before, and
	// returns how many (their retention: a deleted session answers as an ended one).
	PruneSessions(ctx context.Context, before time.Time) (int64, error)
}
