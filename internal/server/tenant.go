package server

import (
	"cmp"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/httpapi"
	"upkeep.dev/upkeep/internal/sso"
	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/sqlstore"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

// Tenants (docs/DECISIONS.md "Tenants"): an organisation served under /t/{name}/ is a complete
// server stack of its own, opened by Open from a configuration derived from the default one:
// its own store (DATA/tenants/NAME/upkeep.db, or the PostgreSQL schema upkeep_tenant_NAME), its
// own artifacts (DATA/tenants/NAME/artifacts, or the S3 prefix tenants/NAME/), its own online
// keys and device-token key (DATA/tenants/NAME/keys), users, tokens and jobs. Nothing in any
// store knows of tenants, so isolation holds by construction. The default stack keeps the
// tenants list (table tenants) and routes /t/{name}/... to the tenant's handler with the prefix
// stripped; everything else is its own, exactly as without tenants.

// Defaults of the tenants' resources.
const (
	// DefaultTenantPoolConns is the PostgreSQL pool of each tenant's stack: few, since the
	// connections of every tenant count against the database's max_connections.
	DefaultTenantPoolConns = 4
	// DefaultTenantsEvery is how often a replica reads the tenants list.
	DefaultTenantsEvery = 5 * time.Second
)

// tenantFiles are the files of a tenant's key set that the server keeps: the online part of
// `upkeep keys init`'s output (sent by `upkeep tenants add`) and the device-token key (made by
// the server).
var tenantFiles = []string{tuf.FileSnapshotKey, tuf.FileTimestampKey, tuf.FileDirectorKey, tuf.FileImageRoot, tuf.FileDirectorRoot, tuf.FileImageTargets}

// maxTenantFile bounds each key file of a tenant request.
const maxTenantFile = 64 << 10

var tenantNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidTenantName checks a tenant name against the DNS label rules (RFC 1123: 1-63 lower-case
// letters, digits and hyphens, neither first nor last a hyphen), so that it is safe as a URL
// path segment, a folder name, a PostgreSQL schema suffix and an S3 prefix.
func ValidTenantName(name string) error {
	if !tenantNameRE.MatchString(name) {
		return apperr.E(apperr.Invalid, "tenant name %q: want a DNS label (1-63 of a-z, 0-9 and -, not starting or ending with -)", name)
	}
	return nil
}

// tenantStack is a tenant's open server stack and the handler that serves it under its prefix.
type tenantStack struct {
	srv     *Server
	handler http.Handler
}

// tenants is the default stack's registry of tenant stacks. The map is replaced, never changed,
// so that the front handler reads it without a lock; mu orders the changes (adding, opening).
type tenants struct {
	s      *Server // the default stack
	mu     sync.Mutex
	stacks atomic.Pointer[map[string]*tenantStack]
	failed map[string]string // name -> last error opening it, logged once; under mu
}

func newTenants(s *Server) *tenants {
	t := &tenants{s: s, failed: map[string]string{}}
	t.stacks.Store(&map[string]*tenantStack{})
	return t
}

// front serves /t/{name}/... with the tenant's stack (the prefix stripped) when name is a tenant
// this replica serves, and everything else with def: without tenants, every URL is def's.
//
// front is the root handler of the default stack's http.Server, so it strips the prefix in the
// request it was given instead of copying the request as http.StripPrefix does: net/http reads
// nothing of r.URL after the handler returns, and the two copies cost a tenant's check-in ~9%
// of its handler time (BenchmarkTenantCheckin). A path with an escaped form (RawPath) takes
// http.StripPrefix, whose rules for it are the standard library's.
func (t *tenants) front(def http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; len(p) > 3 && p[:3] == "/t/" {
			name, _, sub := strings.Cut(p[3:], "/")
			if st := (*t.stacks.Load())[name]; st != nil {
				if r.URL.RawPath != "" {
					st.handler.ServeHTTP(w, r)
					return
				}
				r.URL.Path = ""
				if sub { // "/t/name/..." rather than "/t/name"
					r.URL.Path = p[3+len(name):]
				}
				st.srv.handler.ServeHTTP(w, r)
				return
			}
		}
		def.ServeHTTP(w, r)
	})
}

// get returns the stack of the named tenant, or nil.
func (t *tenants) get(name string) *Server {
	if st := (*t.stacks.Load())[name]; st != nil {
		return st.srv
	}
	return nil
}

// put adds a stack to the map (under mu).
func (t *tenants) put(name string, srv *Server) {
	old := *t.stacks.Load()
	m := make(map[string]*tenantStack, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[name] = &tenantStack{srv: srv, handler: http.StripPrefix("/t/"+name, srv.handler)}
	t.stacks.Store(&m)
}

// load opens every tenant of the list that this replica does not serve yet: at start, and then
// every TenantsEvery (the follow-tenants job), so that a tenant another replica added is served
// here too. A tenant that fails to open is logged (once per distinct error) and tried again next
// time; the others are served all the same.
// A tenant not ready yet (its add is under way on some replica, or failed midway) is skipped.
// The list is read under mu, so that it is never older than an add or undo of this replica.
func (t *tenants) load(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	rows, err := t.s.DB.FindTenants(ctx)
	if err != nil {
		return err
	}
	for _, row := range rows {
		if !row.Ready || t.get(row.Name) != nil {
			continue
		}
		srv, err := t.open(ctx, row)
		if err != nil {
			if ctx.Err() == nil && t.failed[row.Name] != err.Error() {
				t.s.Config.Logger.Error("open tenant", "tenant", row.Name, "err", err)
				t.failed[row.Name] = err.Error()
			}
			continue
		}
		delete(t.failed, row.Name)
		t.put(row.Name, srv)
		t.s.Config.Logger.Info("serving tenant", "tenant", row.Name, "path", "/t/"+row.Name)
	}
	return nil
}

// open opens a recorded tenant's stack, first writing its key files from the sealed copy if
// this replica has none yet.
func (t *tenants) open(ctx context.Context, row *sqlstore.Tenant) (*Server, error) {
	cfg, err := t.s.tenantConfig(ctx, row.Name)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(cfg.KeysDir, tuf.FileSnapshotKey)); errors.Is(err, fs.ErrNotExist) {
		files, err := unsealTenantKeys(t.s.tokenKey, row.Name, row.SealedKeys)
		if err != nil {
			return nil, err
		}
		if err := writeTenantKeys(cfg.KeysDir, files); err != nil {
			return nil, err
		}
	}
	return Open(ctx, cfg)
}

// closeAll closes every tenant stack.
func (t *tenants) closeAll() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var err error
	for name, st := range *t.stacks.Load() {
		if cerr := st.srv.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close tenant %s: %w", name, cerr))
		}
	}
	t.stacks.Store(&map[string]*tenantStack{})
	return err
}

// AddTenant implements httpapi.Tenants: it records the tenant, writes its keys, opens its stack
// (which creates its store and its first admin token) and serves it. Returns apperr.Invalid for
// a bad name or key set, apperr.Conflict if the name is taken.
func (t *tenants) AddTenant(ctx context.Context, req wire.TenantRequest) (*wire.TenantCreated, error) {
	if err := ValidTenantName(req.Name); err != nil {
		return nil, err
	}
	files, err := checkTenantKeys(req.Keys)
	if err != nil {
		return nil, err
	}
	tokenKey := make([]byte, 32)
	rand.Read(tokenKey) //nolint:errcheck // crypto/rand does not fail
	files[FileDeviceTokenKey] = []byte(hex.EncodeToString(tokenKey) + "\n")
	sealed, err := sealTenantKeys(t.s.tokenKey, req.Name, files)
	if err != nil {
		return nil, err
	}
	cfg, err := t.s.tenantConfig(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.get(req.Name) != nil {
		return nil, apperr.E(apperr.Conflict, "tenant %s exists", req.Name)
	}
	if _, err := os.Stat(cfg.DataDir); err == nil {
		return nil, apperr.E(apperr.Conflict, "tenant %s: its data folder exists already (left by an earlier tenant of that name?): remove it first", req.Name)
	}
	row := &sqlstore.Tenant{Name: req.Name, CreatedAt: t.s.now().UTC().Truncate(time.Microsecond), SealedKeys: sealed}
	if err := t.s.DB.CreateTenant(ctx, row); apperr.Is(err, apperr.Conflict) {
		return nil, apperr.E(apperr.Conflict, "tenant %s exists, or is being added (an add that failed midway leaves it not ready: see docs/OPERATORS.md)", req.Name)
	} else if err != nil {
		return nil, err
	}
	undo := func(srv *Server) {
		if srv != nil {
			srv.Close() //nolint:errcheck // already failing
		}
		ctx := context.WithoutCancel(ctx)
		if err := t.s.DB.DeleteTenant(ctx, req.Name); err != nil {
			t.s.Config.Logger.Error("undo tenant", "tenant", req.Name, "err", err)
		}
		os.RemoveAll(cfg.DataDir) //nolint:errcheck // best effort
		if cfg.Database != "" {
			// The schema is the tenant's only (its row was ours): what a failed open left in it
			// (a root that did not match the keys, say) must not meet the next attempt.
			if err := postgres.DropSchema(ctx, t.s.Config.Database, TenantSchema(req.Name)); err != nil {
				t.s.Config.Logger.Error("undo tenant", "tenant", req.Name, "err", err)
			}
		}
	}
	if err := writeTenantKeys(cfg.KeysDir, files); err != nil {
		undo(nil)
		return nil, err
	}
	srv, err := Open(ctx, cfg)
	if err != nil {
		undo(nil)
		return nil, apperr.Wrap(apperr.Invalid, err, "tenant "+req.Name+": its stack did not open: "+err.Error())
	}
	if srv.AdminToken == "" {
		undo(srv)
		return nil, apperr.E(apperr.Conflict, "tenant %s: its store holds operators already (left by an earlier tenant of that name?): drop it first", req.Name)
	}
	if err := t.s.DB.MarkTenantReady(ctx, req.Name); err != nil {
		undo(srv)
		return nil, err
	}
	t.put(req.Name, srv)
	t.s.Config.Logger.Info("tenant added", "tenant", req.Name, "path", "/t/"+req.Name)
	return &wire.TenantCreated{Tenant: wire.Tenant{Name: req.Name, Path: "/t/" + req.Name, CreatedAt: row.CreatedAt, Ready: true, Serving: true}, AdminToken: srv.AdminToken}, nil
}

// Tenants implements httpapi.Tenants: the tenants list, and whether this replica serves each.
func (t *tenants) Tenants(ctx context.Context) ([]wire.Tenant, error) {
	rows, err := t.s.DB.FindTenants(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]wire.Tenant, 0, len(rows))
	for _, r := range rows {
		out = append(out, wire.Tenant{Name: r.Name, Path: "/t/" + r.Name, CreatedAt: r.CreatedAt, Ready: r.Ready, Serving: t.get(r.Name) != nil})
	}
	return out, nil
}

// Tenant returns the stack of the named tenant that this replica serves, or nil.
func (s *Server) Tenant(name string) *Server {
	if s.tenants == nil {
		return nil
	}
	return s.tenants.get(name)
}

// checkTenantKeys checks that a tenant request carries exactly the online key files, each a
// key or metadata file that parses, and returns a copy.
func checkTenantKeys(keys map[string][]byte) (map[string][]byte, error) {
	files := map[string][]byte{}
	for name, b := range keys {
		switch {
		case len(b) > maxTenantFile:
			return nil, apperr.E(apperr.TooLarge, "key file %s is larger than %d bytes", name, maxTenantFile)
		case name == tuf.FileSnapshotKey || name == tuf.FileTimestampKey || name == tuf.FileDirectorKey:
			if _, err := tuf.ParseKey(b); err != nil {
				return nil, apperr.Wrap(apperr.Invalid, err, "key file "+name+" is not a key: "+err.Error())
			}
		case name == tuf.FileImageRoot || name == tuf.FileDirectorRoot:
			if _, err := tuf.ParseRoot(b); err != nil {
				return nil, apperr.Wrap(apperr.Invalid, err, name+" is not a root: "+err.Error())
			}
		case name == tuf.FileImageTargets:
		default:
			return nil, apperr.E(apperr.Invalid, "key file %s: want only the online files %s (the offline keys stay with you)", name, strings.Join(tenantFiles, ", "))
		}
		files[name] = b
	}
	for _, name := range tenantFiles {
		if files[name] == nil {
			return nil, apperr.E(apperr.Invalid, "key file %s is missing: send the online files of `upkeep keys init`", name)
		}
	}
	return files, nil
}

// writeTenantKeys writes a tenant's key files into dir (0700; files 0600).
func writeTenantKeys(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tenant keys: %w", err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return fmt.Errorf("tenant keys: %w", err)
		}
	}
	return nil
}

// tenantSealKey derives the key that seals a tenant's key files from the installation's
// device-token key (which every replica holds, checked by digest at start) and the tenant's name.
func tenantSealKey(tokenKey []byte, name string) ([]byte, error) {
	return hkdf.Key(sha256.New, tokenKey, nil, "upkeep tenant keys v1 "+name, 32)
}

// sealTenantKeys encrypts a tenant's key files (AES-256-GCM, the name as additional data) for the
// tenants table: nonce, then ciphertext. The standard library's primitives; only the layout is ours.
func sealTenantKeys(tokenKey []byte, name string, files map[string][]byte) ([]byte, error) {
	plain, err := json.Marshal(files)
	if err != nil {
		return nil, err
	}
	aead, err := tenantAEAD(tokenKey, name)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	rand.Read(nonce) //nolint:errcheck // crypto/rand does not fail
	return aead.Seal(nonce, nonce, plain, []byte(name)), nil
}

// unsealTenantKeys reverses sealTenantKeys.
func unsealTenantKeys(tokenKey []byte, name string, sealed []byte) (map[string][]byte, error) {
	aead, err := tenantAEAD(tokenKey, name)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize() {
		return nil, fmt.Errorf("tenant %s: sealed keys are truncated", name)
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("tenant %s: its keys do not open with this server's device-token key (another installation's?): %w", name, err)
	}
	var files map[string][]byte
	if err := json.Unmarshal(plain, &files); err != nil {
		return nil, fmt.Errorf("tenant %s: sealed keys: %w", name, err)
	}
	return files, nil
}

func tenantAEAD(tokenKey []byte, name string) (cipher.AEAD, error) {
	k, err := tenantSealKey(tokenKey, name)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// tenantConfig derives a tenant's configuration from the default stack's: the same limits and
// clock, its own data folder, keys folder, store and artifacts, and the public URL under its
// prefix.
func (s *Server) tenantConfig(ctx context.Context, name string) (Config, error) {
	if err := ValidTenantName(name); err != nil {
		return Config{}, err
	}
	c := s.Config
	c.tenant = name
	c.DataDir = filepath.Join(s.Config.DataDir, "tenants", name)
	c.KeysDir = filepath.Join(c.DataDir, "keys")
	c.PublicURL = strings.TrimSuffix(cmp.Or(s.Config.PublicURL, s.URL), "/") + "/t/" + name
	if c.DDI.PublicURL != "" {
		c.DDI.PublicURL = strings.TrimSuffix(c.DDI.PublicURL, "/") + "/t/" + name
	}
	c.Logger = s.Config.Logger.With("tenant", name)
	// The default's DDI gateway token is its own: a tenant's DDI devices use target tokens
	// (devices create --ddi under the tenant's prefix).
	c.DDI.GatewayToken, c.DDI.Product, c.DDI.HardwareID, c.DDI.AutoAccept = "", "", "", false
	// Single sign-on is the default tenant's: its role map grants roles to the provider's
	// accounts, and the same map at a tenant's prefix would let them into every tenant.
	// Tenants log in with local accounts and tokens (docs/OPERATORS.md, Tenants).
	c.OIDC = sso.Config{}
	// Push: the tenant's devices get broker names, roles and topics of their own
	// (upkeep/t/<tenant>/d/<id>), so that tenants sharing a broker cannot meet there.
	c.Push.Namespace, c.Push.TopicPrefix = name, ""
	if c.Database != "" {
		dsn, err := tenantDSN(ctx, c.Database, name, cmp.Or(s.Config.TenantPoolConns, DefaultTenantPoolConns))
		if err != nil {
			return Config{}, err
		}
		c.Database = dsn
	}
	if strings.HasPrefix(c.Blobs, "s3://") {
		u, err := url.Parse(c.Blobs)
		if err != nil {
			return Config{}, fmt.Errorf("blob store: %w", err)
		}
		q := u.Query()
		q.Set("prefix", q.Get("prefix")+"tenants/"+name+"/")
		u.RawQuery = q.Encode()
		c.Blobs = u.String()
	}
	return c, nil
}

// TenantSchema is the PostgreSQL schema of a tenant's store: upkeep_tenant_NAME ("-" becomes
// "_", which names never hold), or, for a name too long for PostgreSQL's 63-byte identifiers
// (which it would cut, so that two long names could share a schema), upkeep_th_ and 40 hex
// digits of the name's SHA-256.
func TenantSchema(name string) string {
	if s := "upkeep_tenant_" + strings.ReplaceAll(name, "-", "_"); len(s) <= 63 {
		return s
	}
	sum := sha256.Sum256([]byte(name))
	return "upkeep_th_" + hex.EncodeToString(sum[:20])
}

// tenantDSN makes the DSN of a tenant's store from the default one: the tenant's schema (created
// if missing) as search_path, and a pool of conns connections.
func tenantDSN(ctx context.Context, dsn, name string, conns int) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("tenant %s: database %q: want a postgres:// URL", name, dsn)
	}
	schema := TenantSchema(name)
	if err := postgres.CreateSchema(ctx, dsn, schema); err != nil {
		return "", fmt.Errorf("tenant %s: %w", name, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("pool_max_conns", strconv.Itoa(conns))
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// followTenants is the follow-tenants job: it opens the tenants other replicas added.
func (s *Server) followTenants(ctx context.Context) {
	if err := s.tenants.load(ctx); err != nil && ctx.Err() == nil {
		s.Config.Logger.Warn("tenants list", "err", err)
	}
}

// Routes lists the routes the server's HTTP API registered, with their permissions (tests walk
// them).
func (s *Server) Routes() []httpapi.Route { return s.api.Registered() }
