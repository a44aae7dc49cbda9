package auth

import (
	"os"
	"strings"
	"testing"
)

// permissionTable renders RolePermissions as the Markdown table of docs/OPERATORS.md.
func permissionTable() string {
	var b strings.Builder
	b.WriteString("| permission | " + strings.Join(Roles, " | ") + " |\n|---|")
	b.WriteString(strings.Repeat("---|", len(Roles)) + "\n")
	for _, p := range Permissions {
		if p == PermNone {
			continue
		}
		b.WriteString("| `" + string(p) + "` |")
		for _, r := range Roles {
			if Allows(r, p) {
				b.WriteString(" ✓ |")
			} else {
				b.WriteString(" |")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestPermissionDocs: docs/OPERATORS.md holds the permission map as RolePermissions has it.
func TestPermissionDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/OPERATORS.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := permissionTable(); !strings.Contains(string(doc), want) {
		t.Fatalf("docs/OPERATORS.md does not hold the permission map; want this table:\n%s", want)
	}
}

func TestPasswordHash(t *testing.T) {
	h := HashPassword("correct horse battery")
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q", h)
	}
	if err := VerifyPassword(h, "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ hash, pw string }{
		{h, "correct horse batterY"},
		{"", "anything"},
		{"$argon2id$v=19$m=1,t=1,p=1$AAAA$", "x"},
		{"$argon2i$v=19$m=19456,t=2,p=1$AAAA$AAAA", "x"},
		{"garbage", "x"},
	} {
		if err := VerifyPassword(c.hash, c.pw); err != ErrWrongPassword {
			t.Errorf("VerifyPassword(%q, %q) = %v, want ErrWrongPassword", c.hash, c.pw, err)
		}
	}
	if HashPassword("a") == HashPassword("a") {
		t.Fatal("no salt")
	}
}
