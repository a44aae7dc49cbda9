package httpapi

import (
	"encoding/json"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/product"
)

// TestProductWarning checks the operator's warning around the support end date: support lasts
// through the end date, so the last day says "ends", and the next day "ended".
func TestProductWarning(t *testing.T) {
	pol, _ := json.Marshal(product.Policy{SupportEnd: "2030-06-30", Delivery: product.DeliveryAutomatic})
	p := &product.Product{Name: "thermostat", Policy: pol}
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339, s); return t }
	tests := []struct {
		now  time.Time
		want string
	}{
		{at("2029-01-01T00:00:00Z"), ""},
		{at("2030-06-01T12:00:00Z"), "security-update support ends on 2030-06-30"},
		{at("2030-06-30T00:00:01Z"), "security-update support ends on 2030-06-30"},
		{at("2030-06-30T23:59:59Z"), "security-update support ends on 2030-06-30"},
		{at("2030-07-01T00:00:00Z"), "security-update support ended on 2030-06-30"},
	}
	for _, tt := range tests {
		if got := productToWire(p, tt.now).Warning; got != tt.want {
			t.Errorf("at %s: %q, want %q", tt.now, got, tt.want)
		}
	}
}
