package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters of new password hashes: OWASP's recommended minimum (19 MiB, 2 passes,
// 1 lane). A stored hash carries its own parameters, so raising them later keeps old hashes
// valid.
const (
	argonMemory  = 19 * 1024 // KiB
	argonTime    = 2
	argonThreads = 1
	argonKeyLen  = 32
)

// Password bounds: long passphrases are welcome, but the hash's cost must not be an attacker's
// lever.
const (
	MinPassword = 12
	MaxPassword = 256
)

// ErrWrongPassword is returned by VerifyPassword for any mismatch or malformed hash.
var ErrWrongPassword = errors.New("wrong password")

// CheckPassword validates a new password's length.
func CheckPassword(pw string) error {
	if len(pw) < MinPassword || len(pw) > MaxPassword {
		return fmt.Errorf("a password has %d to %d characters", MinPassword, MaxPassword)
	}
	return nil
}

// HashPassword returns the argon2id hash of pw in the PHC string format
// ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
func HashPassword(pw string) string {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		panic(err)
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// dummyHash is verified against when there is no user, so that an unknown name costs as much
// time as a wrong password.
var dummyHash = HashPassword("no user has this password")

// VerifyPassword checks pw against a hash made by HashPassword, in constant time. An empty hash
// (a user without a password) is checked against a dummy hash and fails, taking as long.
func VerifyPassword(hash, pw string) error {
	bad := hash == ""
	if bad {
		hash = dummyHash
	}
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return ErrWrongPassword
	}
	var v int
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return ErrWrongPassword
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || m > 1<<20 || t == 0 || t > 16 || p == 0 {
		return ErrWrongPassword
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 || len(want) > 64 {
		return ErrWrongPassword
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	if subtle.ConstantTimeCompare(got, want) != 1 || bad {
		return ErrWrongPassword
	}
	return nil
}
