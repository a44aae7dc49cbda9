// Package push is the server side of push: it publishes payload-free "check in now" nudges to
// devices through an MQTT broker (Mosquitto) and provisions each device's broker credentials
// in the broker's dynamic-security plugin ($CONTROL/dynamic-security/v1), so that a device may
// subscribe to its own topic only and publish nothing. A nudge carries nothing and is trusted
// for nothing: the device answers it with its normal signed check-in.
//
// The MQTT client is github.com/eclipse/paho.mqtt.golang; the dynamic-security command
// exchange (a JSON request on $CONTROL/dynamic-security/v1, its answer on .../response) has
// no maintained Go client, so it is written here.
package push

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/wire"
)

// Config configures the server's broker connection.
type Config struct {
	// URL is the broker as the server reaches it (tcp://host:1883, ssl://host:8883, ws://...).
	// Empty: push is off and devices poll.
	URL string
	// DeviceURL is the broker as devices reach it; empty: URL.
	DeviceURL string
	// Username and Password are the server's own broker account: a dynamic-security
	// administrator (mosquitto_ctrl dynsec init), which Open also lets publish under
	// TopicPrefix.
	Username, Password string
	// TopicPrefix prefixes each device's topic; default DefaultTopicPrefix, or
	// upkeep/t/<Namespace>/d/ with a Namespace.
	TopicPrefix string
	// Namespace keeps a tenant's devices apart on a broker shared by tenants: it prefixes their
	// broker user names (<Namespace>:<device>), roles and topics. Empty: the default tenant.
	Namespace string
	// TLS, if set, is used for ssl://, mqtts:// and wss:// URLs.
	TLS *tls.Config
	// Queue bounds the nudges waiting to be published (default 65,536); past it a nudge is
	// dropped (the device polls anyway) and counted.
	Queue int
	// Timeout bounds connecting and each dynamic-security command (default 10 s).
	Timeout time.Duration
}

// DefaultTopicPrefix is the topic prefix of the devices' nudge topics: upkeep/d/<device-id>.
const DefaultTopicPrefix = "upkeep/d/"

const (
	controlTopic  = "$CONTROL/dynamic-security/v1"
	responseTopic = controlTopic + "/response"
	serverRole    = "upkeep-server"
	rolePrefix    = "upkeep-d-"
)

// Service publishes nudges and issues device credentials. It is safe for concurrent use.
type Service struct {
	cfg    Config
	log    *slog.Logger
	client mqtt.Client
	queue  chan string
	done   chan struct{}
	wg     sync.WaitGroup

	id      string       // this connection's client id: prefixes correlation data, as every
	seq     atomic.Int64 // administrator connection of the broker receives every answer
	ready   atomic.Bool  // connected and subscribed to the plugin's answers
	mu      sync.Mutex
	waiting map[string]chan dynsecResponse

	// Published and Dropped count nudges handed to the broker and nudges dropped on a full queue.
	Published, Dropped atomic.Int64
}

// Open connects to the broker, gives the server's account its publishing role, and starts the
// publisher. The connection reconnects by itself; nudges made while it is down are dropped
// (devices poll anyway).
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.URL == "" {
		return nil, errors.New("push: broker URL is required")
	}
	if cfg.DeviceURL == "" {
		cfg.DeviceURL = cfg.URL
	}
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = DefaultTopicPrefix
		if cfg.Namespace != "" {
			cfg.TopicPrefix = "upkeep/t/" + cfg.Namespace + "/d/"
		}
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1 << 16
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Service{cfg: cfg, log: log, queue: make(chan string, cfg.Queue), done: make(chan struct{}), waiting: map[string]chan dynsecResponse{}}
	var b [6]byte
	rand.Read(b[:]) //nolint:errcheck // crypto/rand does not fail
	s.id = "upkeep-server-" + base64.RawURLEncoding.EncodeToString(b[:])
	o := mqtt.NewClientOptions().AddBroker(cfg.URL).SetClientID(s.id).
		SetUsername(cfg.Username).SetPassword(cfg.Password).SetCleanSession(true).SetAutoReconnect(true).
		SetConnectRetry(false).SetConnectTimeout(cfg.Timeout).SetKeepAlive(30 * time.Second).SetMaxReconnectInterval(30 * time.Second).
		SetOrderMatters(false)
	if cfg.TLS != nil {
		o.SetTLSConfig(cfg.TLS)
	}
	o.SetOnConnectHandler(func(c mqtt.Client) {
		// (Re)subscribe to the plugin's answers: a clean session forgets subscriptions.
		// Commands wait until it holds (ready), or their answers would be lost.
		t := c.Subscribe(responseTopic, 1, s.onResponse)
		go func() {
			if t.Wait() && t.Error() == nil {
				s.ready.Store(true)
			}
		}()
	})
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		s.ready.Store(false)
		log.Warn("push broker connection lost", "err", err)
	})
	s.client = mqtt.NewClient(o)
	if err := wait(ctx, s.client.Connect(), cfg.Timeout); err != nil {
		return nil, fmt.Errorf("push: connect to broker %s: %w", cfg.URL, err)
	}
	if err := wait(ctx, s.client.Subscribe(responseTopic, 1, s.onResponse), cfg.Timeout); err != nil {
		s.client.Disconnect(0)
		return nil, fmt.Errorf("push: subscribe to %s: %w", responseTopic, err)
	}
	s.ready.Store(true)
	if err := s.ensureServerRole(ctx); err != nil {
		s.client.Disconnect(0)
		return nil, err
	}
	s.wg.Add(1)
	go s.publisher()
	return s, nil
}

// Close stops the publisher and disconnects.
func (s *Service) Close() {
	close(s.done)
	s.wg.Wait()
	s.client.Disconnect(250)
}

// Connected says whether the broker connection is up (it reconnects by itself).
func (s *Service) Connected() bool { return s.client.IsConnectionOpen() }

// Topic is a device's nudge topic.
func (s *Service) Topic(device string) string { return s.cfg.TopicPrefix + device }

// Nudge queues a "check in now" for device; it never blocks. Called for each assignment change
// (director.Service.OnAssign), so a deployment or an opening campaign wave nudges each of its
// devices as their views are stored.
func (s *Service) Nudge(device string) {
	if !validID(device) {
		return
	}
	select {
	case s.queue <- device:
	default:
		s.Dropped.Add(1)
	}
}

func (s *Service) publisher() {
	defer s.wg.Done()
	for {
		select {
		case <-s.done:
			return
		case id := <-s.queue:
			if !s.client.IsConnectionOpen() {
				s.Dropped.Add(1)
				continue
			}
			// QoS 0, empty payload, not retained: a nudge that is missed costs a poll interval.
			s.client.Publish(s.Topic(id), 0, false, []byte{})
			s.Published.Add(1)
		}
	}
}

// Credentials implements httpapi.PushCredentials: it sets a fresh random password for the
// device's broker client (creating the client, and its role allowing only a subscription to
// its own topic, the first time) and returns them. Returns apperr.Unavailable when the broker
// does not answer.
func (s *Service) Credentials(ctx context.Context, device string) (*wire.PushCredentials, error) {
	if !validID(device) {
		return nil, apperr.E(apperr.Invalid, "device id %q cannot name a broker topic", device)
	}
	var b [24]byte
	rand.Read(b[:]) //nolint:errcheck
	password := base64.RawURLEncoding.EncodeToString(b[:])
	user := device
	if s.cfg.Namespace != "" {
		user = s.cfg.Namespace + ":" + device
	}
	role, topic := rolePrefix+user, s.Topic(device)
	err := s.command(ctx, dynsecCommand{Command: "createRole", RoleName: role, ACLs: []acl{
		{ACLType: "subscribePattern", Topic: topic, Allow: true},
		{ACLType: "publishClientReceive", Topic: topic, Allow: true},
	}})
	if err != nil && !alreadyExists(err) {
		return nil, err
	}
	err = s.command(ctx, dynsecCommand{Command: "createClient", Username: user, Password: password, Roles: []roleRef{{RoleName: role}}})
	if alreadyExists(err) {
		err = s.command(ctx, dynsecCommand{Command: "setClientPassword", Username: user, Password: password})
	}
	if err != nil {
		return nil, err
	}
	return &wire.PushCredentials{URL: s.cfg.DeviceURL, Username: user, Password: password, Topic: topic, ClientID: user}, nil
}

// ensureServerRole lets the server's own account publish under TopicPrefix (the account made by
// `mosquitto_ctrl dynsec init` may administer the plugin only).
func (s *Service) ensureServerRole(ctx context.Context) error {
	serverRole := serverRole
	if s.cfg.Namespace != "" {
		serverRole += "-" + s.cfg.Namespace
	}
	err := s.command(ctx, dynsecCommand{Command: "createRole", RoleName: serverRole, ACLs: []acl{
		{ACLType: "publishClientSend", Topic: s.cfg.TopicPrefix + "#", Allow: true},
	}})
	if err != nil && !alreadyExists(err) {
		return fmt.Errorf("push: create the server's broker role: %w", err)
	}
	data, err := s.query(ctx, dynsecCommand{Command: "getClient", Username: s.cfg.Username})
	if err != nil {
		return fmt.Errorf("push: read the server's broker account: %w", err)
	}
	var got struct {
		Client struct {
			Roles []roleRef `json:"roles"`
		} `json:"client"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		return fmt.Errorf("push: read the server's broker account: %w", err)
	}
	for _, r := range got.Client.Roles {
		if r.RoleName == serverRole {
			return nil
		}
	}
	// The plugin disconnects a client whose roles change, so the answer to this command is
	// lost with the connection: send it, then wait for the reconnection.
	s.client.Publish(controlTopic, 1, false, mustJSON(map[string][]dynsecCommand{"commands": {{Command: "addClientRole", Username: s.cfg.Username, RoleName: serverRole}}}))
	deadline := time.Now().Add(s.cfg.Timeout)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		data, err := s.query(ctx, dynsecCommand{Command: "getClient", Username: s.cfg.Username})
		if err != nil {
			continue
		}
		if json.Unmarshal(data, &got) == nil {
			for _, r := range got.Client.Roles {
				if r.RoleName == serverRole {
					return nil
				}
			}
		}
	}
	return errors.New("push: could not give the server's broker account its publishing role")
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// validID says whether a device id can be a topic level and a broker user name.
func validID(id string) bool {
	return id != "" && len(id) <= 128 && !strings.ContainsAny(id, "+#/\x00 ")
}

type acl struct {
	ACLType  string `json:"acltype"`
	Topic    string `json:"topic"`
	Allow    bool   `json:"allow"`
	Priority int    `json:"priority,omitempty"`
}

type roleRef struct {
	RoleName string `json:"rolename"`
}

type dynsecCommand struct {
	Command         string    `json:"command"`
	Username        string    `json:"username,omitempty"`
	Password        string    `json:"password,omitempty"`
	RoleName        string    `json:"rolename,omitempty"`
	Roles           []roleRef `json:"roles,omitempty"`
	ACLs            []acl     `json:"acls,omitempty"`
	CorrelationData string    `json:"correlationData,omitempty"`
}

type dynsecResponse struct {
	Command         string          `json:"command"`
	Error           string          `json:"error"`
	CorrelationData string          `json:"correlationData"`
	Data            json.RawMessage `json:"data"`
}

// command sends one dynamic-security command and waits for its answer.
func (s *Service) command(ctx context.Context, c dynsecCommand) error {
	_, err := s.query(ctx, c)
	return err
}

// query sends one dynamic-security command and returns the data of its answer.
func (s *Service) query(ctx context.Context, c dynsecCommand) (json.RawMessage, error) {
	c.CorrelationData = s.id + "-" + strconv.FormatInt(s.seq.Add(1), 10)
	ch := make(chan dynsecResponse, 1)
	s.mu.Lock()
	s.waiting[c.CorrelationData] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiting, c.CorrelationData)
		s.mu.Unlock()
	}()
	body, err := json.Marshal(map[string][]dynsecCommand{"commands": {c}})
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(s.cfg.Timeout); !s.ready.Load(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, apperr.E(apperr.Unavailable, "push broker unavailable")
		}
	}
	if err := wait(ctx, s.client.Publish(controlTopic, 1, false, body), s.cfg.Timeout); err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, err, "push broker unavailable")
	}
	t := time.NewTimer(s.cfg.Timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.Error != "" {
			return nil, &commandError{Command: c.Command, Msg: r.Error}
		}
		return r.Data, nil
	case <-t.C:
		return nil, apperr.E(apperr.Unavailable, "push broker: no answer to %s within %s", c.Command, s.cfg.Timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *Service) onResponse(_ mqtt.Client, m mqtt.Message) {
	var r struct {
		Responses []dynsecResponse `json:"responses"`
	}
	if err := json.Unmarshal(m.Payload(), &r); err != nil {
		s.log.Warn("push broker: malformed dynamic-security response", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range r.Responses {
		if ch, ok := s.waiting[x.CorrelationData]; ok {
			ch <- x
			delete(s.waiting, x.CorrelationData)
		}
	}
}

// commandError is the plugin's refusal of a command.
type commandError struct{ Command, Msg string }

func (e *commandError) Error() string { return "push broker: " + e.Command + ": " + e.Msg }

func alreadyExists(err error) bool {
	var ce *commandError
	return errors.As(err, &ce) && strings.Contains(strings.ToLower(ce.Msg), "already exists")
}

// wait waits for a paho token within timeout or ctx.
func wait(ctx context.Context, t mqtt.Token, timeout time.Duration) error {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-tm.C:
		return fmt.Errorf("no answer within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}
