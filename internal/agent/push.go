package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/wire"
)

// Push: the agent keeps one MQTT connection to the broker the server names (POST
// /device/v1/push gives the URL, the device's own credentials and its topic) and, on a message
// there, does its normal signed check-in at once instead of at the next poll, at most once per
// MinNudgeGap. The message's content is ignored and nothing is trusted from the channel: a
// forged nudge costs one ordinary check-in. Without a broker (the server offers none, or it is
// down) the agent polls as before.

// PushOptions configure push (EnablePush).
type PushOptions struct {
	// TLS is used for ssl://, mqtts:// and wss:// broker URLs (the agent's --ca trust).
	TLS *tls.Config
	// KeepAlive is the MQTT keepalive (default 60 s).
	KeepAlive time.Duration
	// MinNudgeGap is the least time between two nudge-driven check-ins (default 30 s).
	MinNudgeGap time.Duration
}

// Push connection states, as `upkeep-agent status` shows them.
const (
	PushOff          = "off"          // not enabled on this device
	PushNotOffered   = "not offered"  // the server has no broker: polling only
	PushConnecting   = "connecting"   // credentials in hand, connecting
	PushConnected    = "connected"    // subscribed to the device's topic
	PushDisconnected = "disconnected" // lost; reconnecting with backoff, polling meanwhile
)

// PushStatus is the push connection's state, kept in STATE/push.json for `upkeep-agent status`.
type PushStatus struct {
	State     string    `json:"state"`
	Since     time.Time `json:"since"`
	Broker    string    `json:"broker,omitempty"`
	LastNudge time.Time `json:"last_nudge,omitzero"`
	Error     string    `json:"error,omitempty"`
}

const pushStatusFile = "push.json"

// Defaults and retry intervals of push.
const (
	defaultKeepAlive   = time.Minute
	DefaultMinNudgeGap = 30 * time.Second
	pushNotOfferedWait = time.Hour        // ask again for credentials after a 404
	pushRetryWait      = 5 * time.Minute  // after another failure to get credentials
	pushStaleAfter     = 10 * time.Minute // disconnected this long: ask for fresh credentials
)

type pushState struct {
	o       PushOptions
	dir     string
	nudges  chan struct{}
	onState func(string) // Agent.SetPushState: the state in runtime.json too

	mu       sync.Mutex
	status   PushStatus
	client   mqtt.Client
	askAfter time.Time // no credential request before
	nudged   time.Time // the last nudge-driven check-in
}

// EnablePush makes the agent keep a push connection, asked for at the next cycle. Call it
// before Run.
func (a *Agent) EnablePush(o PushOptions) {
	if o.KeepAlive <= 0 {
		o.KeepAlive = defaultKeepAlive
	}
	if o.MinNudgeGap <= 0 {
		o.MinNudgeGap = DefaultMinNudgeGap
	}
	a.push = &pushState{o: o, dir: a.cfg.StateDir, nudges: make(chan struct{}, 1), onState: a.SetPushState}
	a.push.set(PushConnecting, "", nil)
}

// PushState returns the push connection's state (PushOff when not enabled).
func (a *Agent) PushState() string {
	if a.push == nil {
		return PushOff
	}
	a.push.mu.Lock()
	defer a.push.mu.Unlock()
	return a.push.status.State
}

// PushLastNudge is when the last nudge-driven check-in started (zero: none).
func (a *Agent) PushLastNudge() time.Time {
	if a.push == nil {
		return time.Time{}
	}
	a.push.mu.Lock()
	defer a.push.mu.Unlock()
	return a.push.nudged
}

// ClosePush disconnects from the broker.
func (a *Agent) ClosePush() {
	if p := a.push; p != nil {
		p.mu.Lock()
		c := p.client
		p.client = nil
		p.mu.Unlock()
		if c != nil {
			c.Disconnect(100)
		}
	}
}

// set records a new state (and writes the status file when it changed).
func (p *pushState) set(state, broker string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setLocked(state, broker, err)
}

func (p *pushState) setLocked(state, broker string, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if p.status.State == state && p.status.Error == msg && (broker == "" || broker == p.status.Broker) {
		return
	}
	changed := p.status.State != state
	p.status.State, p.status.Since, p.status.Error = state, time.Now().UTC(), msg
	if broker != "" {
		p.status.Broker = broker
	}
	p.writeLocked()
	if changed && p.onState != nil {
		p.onState(state)
	}
}

func (p *pushState) writeLocked() {
	b, _ := json.Marshal(p.status)
	boot.WriteFileAtomic(filepath.Join(p.dir, pushStatusFile), b, 0o600) //nolint:errcheck // status only
}

// ReadPushStatus reads the push state an agent running on dir last wrote (State PushOff when
// none was).
func ReadPushStatus(dir string) PushStatus {
	var st PushStatus
	b, err := os.ReadFile(filepath.Join(dir, pushStatusFile))
	if err != nil || json.Unmarshal(b, &st) != nil {
		return PushStatus{State: PushOff}
	}
	return st
}

// pushTick connects when push is enabled and there is no connection, or asks for fresh
// credentials when the connection has been down for long (the broker may have lost them).
// Run calls it between cycles.
func (a *Agent) pushTick(ctx context.Context) {
	p := a.push
	if p == nil {
		return
	}
	p.mu.Lock()
	// Down (or never up) this long: the broker may have lost the credentials, ask for new ones.
	c, stale := p.client, (p.status.State == PushDisconnected || p.status.State == PushConnecting) && time.Since(p.status.Since) > pushStaleAfter
	due := time.Now().After(p.askAfter)
	p.mu.Unlock()
	if c != nil && !stale || !due {
		return
	}
	if c != nil {
		c.Disconnect(0)
	}
	tok, err := a.token(ctx)
	var cred *wire.PushCredentials
	if err == nil {
		cred, err = a.api.PushCredentials(ctx, tok)
	}
	var se *ServerError
	switch {
	case errors.As(err, &se) && se.Status == http.StatusNotFound:
		p.mu.Lock()
		p.client, p.askAfter = nil, time.Now().Add(pushNotOfferedWait)
		p.setLocked(PushNotOffered, "", nil)
		p.mu.Unlock()
		return
	case err != nil:
		a.log.Warn("push credentials", "err", err)
		p.mu.Lock()
		p.client, p.askAfter = nil, time.Now().Add(pushRetryWait)
		p.setLocked(PushDisconnected, "", err)
		p.mu.Unlock()
		return
	}
	log := a.log
	opts := mqtt.NewClientOptions().AddBroker(cred.URL).SetClientID(cred.ClientID).SetUsername(cred.Username).SetPassword(cred.Password).
		SetCleanSession(true).SetKeepAlive(p.o.KeepAlive).SetPingTimeout(10 * time.Second).SetConnectTimeout(30 * time.Second).
		SetAutoReconnect(true).SetMaxReconnectInterval(2 * time.Minute).SetConnectRetry(true).SetConnectRetryInterval(30 * time.Second).
		SetOrderMatters(false)
	if p.o.TLS != nil {
		opts.SetTLSConfig(p.o.TLS)
	}
	topic := cred.Topic
	opts.SetOnConnectHandler(func(c mqtt.Client) {
		// A clean session: subscribe on every (re)connection.
		t := c.Subscribe(topic, 0, func(mqtt.Client, mqtt.Message) {
			select {
			case p.nudges <- struct{}{}:
			default: // one waiting nudge is enough
			}
		})
		go func() {
			t.Wait()
			if err := t.Error(); err != nil {
				p.set(PushDisconnected, "", err)
				return
			}
			if st, ok := t.(*mqtt.SubscribeToken); ok && st.Result()[topic] == 0x80 {
				p.set(PushDisconnected, "", errors.New("the broker refused the subscription to "+topic))
				return
			}
			p.set(PushConnected, "", nil)
			log.Info("push connected", "broker", cred.URL)
		}()
	})
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		p.set(PushDisconnected, "", err)
		log.Warn("push connection lost: polling until it is back", "err", err)
	})
	opts.SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) { p.set(PushDisconnected, "", nil) })
	client := mqtt.NewClient(opts)
	p.mu.Lock()
	p.client, p.askAfter = client, time.Now().Add(pushRetryWait)
	p.setLocked(PushConnecting, cred.URL, nil)
	p.mu.Unlock()
	client.Connect() // retries by itself (SetConnectRetry) until Disconnect
}

// sleep waits d, or less when a nudge comes: then it returns at once, or after MinNudgeGap
// since the last nudge-driven check-in, whichever is later (a nudge that would wait past d is
// left to the poll).
func (a *Agent) sleep(ctx context.Context, d time.Duration) error {
	var nudges chan struct{}
	if a.push != nil {
		nudges = a.push.nudges
	}
	deadline := time.Now().Add(d)
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return nil
		case <-nudges:
			p := a.push
			p.mu.Lock()
			earliest := p.nudged.Add(p.o.MinNudgeGap)
			p.mu.Unlock()
			if wait := time.Until(earliest); wait > 0 {
				if earliest.After(deadline) {
					continue // the poll comes first
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(wait):
				}
			}
			p.mu.Lock()
			p.nudged = time.Now()
			p.status.LastNudge = p.nudged.UTC()
			p.writeLocked()
			p.mu.Unlock()
			a.log.Info("nudged: checking in now")
			return nil
		}
	}
}
