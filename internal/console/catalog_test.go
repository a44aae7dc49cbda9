package console

import (
	"io"
	"testing"
)

// TestCatalogPagesRender: the releases, vulnerabilities, products and administration pages
// render with empty view models (every field optional), so that a template mistake fails here
// rather than as a 500.
func TestCatalogPagesRender(t *testing.T) {
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	pages := map[string]any{
		"releases": ReleaseList{}, "release": ReleasePage{SBOM: &SBOMInfo{}}, "vulns": VulnList{}, "products": ProductList{},
		"product": ProductPage{Edit: &PolicyForm{}}, "admin_home": AdminPage{},
		"admin_users": AdminPage{Data: UserAdmin{}}, "admin_tokens": AdminPage{Data: TokenAdmin{Created: &Secret{}}},
		"admin_enroll_tokens": AdminPage{Data: EnrollAdmin{}}, "admin_webhooks": AdminPage{Data: WebhookAdmin{}},
		"admin_audit": AdminPage{Data: AuditAdmin{}},
	}
	for name, data := range pages {
		if err := c.Render(io.Discard, name, &View{Data: data}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
