package push_test

import (
	"context"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"upkeep.dev/upkeep/internal/push"
	"upkeep.dev/upkeep/internal/push/brokertest"
	"upkeep.dev/upkeep/wire"
)

func open(t *testing.T, b *brokertest.Broker) *push.Service {
	t.Helper()
	s, err := push.Open(context.Background(), push.Config{URL: b.URL, Username: brokertest.AdminUser, Password: brokertest.AdminPassword}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func connect(t *testing.T, url, id, user, password string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(password).SetAutoReconnect(false))
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", user, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// subscribe returns a channel of the topics of the messages received, and the granted QoS
// (0x80: refused).
func subscribe(t *testing.T, c mqtt.Client, topic string) (<-chan string, byte) {
	t.Helper()
	got := make(chan string, 16)
	tok := c.Subscribe(topic, 0, func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() })
	if !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("no SUBACK")
	}
	st := tok.(*mqtt.SubscribeToken)
	return got, st.Result()[topic]
}

func creds(t *testing.T, s *push.Service, id string) *wire.PushCredentials {
	t.Helper()
	c, err := s.Credentials(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A nudge reaches only its device, through the broker's own access control: a device's
// credentials cannot subscribe to another device's topic, and nothing it publishes reaches
// anyone, not even on its own topic.
func TestNudgeOnlyItsDevice(t *testing.T) {
	b := brokertest.Start(t)
	s := open(t, b)
	ca, cb := creds(t, s, "dev-a"), creds(t, s, "dev-b")
	if ca.Topic != "upkeep/d/dev-a" || ca.Username != "dev-a" || ca.Password == "" || ca.URL != b.URL {
		t.Fatalf("credentials %+v", ca)
	}
	a := connect(t, ca.URL, ca.ClientID, ca.Username, ca.Password)
	bc := connect(t, cb.URL, cb.ClientID, cb.Username, cb.Password)
	gotA, qa := subscribe(t, a, ca.Topic)
	gotB, qb := subscribe(t, bc, cb.Topic)
	if qa != 0 || qb != 0 {
		t.Fatalf("own topic subscriptions granted %#x %#x, want 0", qa, qb)
	}
	if _, q := subscribe(t, a, cb.Topic); q != 0x80 {
		t.Errorf("device a subscribing to b's topic: granted %#x, want refused (0x80)", q)
	}
	if _, q := subscribe(t, a, "upkeep/d/#"); q != 0x80 {
		t.Errorf("device a subscribing to every device's topic: granted %#x, want refused", q)
	}
	// Whatever a device publishes, to its own topic or another's, reaches no one.
	watcher := connect(t, b.URL, "watcher", brokertest.AdminUser, brokertest.AdminPassword)
	all, _ := subscribe(t, watcher, "upkeep/#")
	for _, topic := range []string{ca.Topic, cb.Topic} {
		a.Publish(topic, 1, false, []byte("forged")).WaitTimeout(2 * time.Second)
	}
	s.Nudge("dev-a")
	select {
	case topic := <-gotA:
		if topic != ca.Topic {
			t.Fatalf("device a got %s", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the nudge did not reach device a")
	}
	select {
	case topic := <-all:
		if topic != ca.Topic {
			t.Fatalf("watcher saw %s", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher did not see the server's nudge")
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case topic := <-gotB:
		t.Fatalf("device b received %s: a nudge for a, or a device's publish", topic)
	case topic := <-all:
		t.Fatalf("a message besides the server's nudge went through: %s", topic)
	case topic := <-gotA:
		t.Fatalf("device a received a second message on %s: its own publish went through", topic)
	default:
	}
	// A fresh request replaces the password: the old one no longer connects.
	old := ca.Password
	ca = creds(t, s, "dev-a")
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL).SetClientID("dev-a-old").SetUsername("dev-a").SetPassword(old))
	if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		c.Disconnect(0)
		t.Error("the replaced password still connects")
	}
	connect(t, b.URL, "dev-a-new", ca.Username, ca.Password)
	// Opening again (a restarted server) finds its role and the devices' in place.
	open(t, b)
}

// Tenants sharing a broker: a tenant's device of the same id as a default device gets a name,
// role and topic of its own, cannot read the other's topic, and gets its own tenant's nudges.
func TestNamespaces(t *testing.T) {
	b := brokertest.Start(t)
	def := open(t, b)
	acme, err := push.Open(context.Background(), push.Config{URL: b.URL, Username: brokertest.AdminUser, Password: brokertest.AdminPassword, Namespace: "acme"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(acme.Close)
	// Giving the shared administrator account acme's publishing role made the broker drop its
	// connections: the default tenant's reconnects by itself.
	for deadline := time.Now().Add(10 * time.Second); !def.Connected(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the default tenant's connection did not come back")
		}
	}
	cd, ca := creds(t, def, "dev"), creds(t, acme, "dev")
	if ca.Username != "acme:dev" || ca.Topic != "upkeep/t/acme/d/dev" || cd.Username != "dev" || cd.Topic != "upkeep/d/dev" {
		t.Fatalf("default %+v, acme %+v", cd, ca)
	}
	c := connect(t, b.URL, ca.ClientID, ca.Username, ca.Password)
	if _, q := subscribe(t, c, cd.Topic); q != 0x80 {
		t.Errorf("acme's device subscribing to the default tenant's device topic: granted %#x", q)
	}
	got, q := subscribe(t, c, ca.Topic)
	if q != 0 {
		t.Fatalf("own topic refused: %#x", q)
	}
	acme.Nudge("dev")
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("acme's nudge did not arrive")
	}
	// The default tenant's credentials still work beside them.
	connect(t, b.URL, cd.ClientID, cd.Username, cd.Password)
}
