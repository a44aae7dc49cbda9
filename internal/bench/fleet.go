package bench

import (
	"bufio"
	"cmp"
	"container/heap"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"upkeep.dev/upkeep/internal/devclient"
)

// FleetRecoveryLimit is how soon after an outage every device that noticed it must have checked
// in again (`bench fleet --outage`).
const FleetRecoveryLimit = 10 * time.Minute

// pollItem is a device's next check-in.
type pollItem struct {
	at  time.Time
	dev int32
}

type pollQueue []pollItem

func (q pollQueue) Len() int           { return len(q) }
func (q pollQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q pollQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *pollQueue) Push(x any)        { *q = append(*q, x.(pollItem)) }
func (q *pollQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

// nextPoll is when a bench device polls again after a check-in that gave res or err, as the
// agent's Run: after a success within the poll interval and jitter the server suggested
// (interval when it suggested none; ±20% without a jitter hint), and backoff goes back to 0;
// after a failure (a refused connection, a 5xx, a 429) the next step of the agent's backoff
// (devclient.NextBackoff), jittered, and never sooner than a Retry-After.
func nextPoll(res devclient.CheckinResult, err error, interval time.Duration, backoff *time.Duration) time.Duration {
	if err == nil {
		*backoff = 0
		return devclient.NextPoll(cmp.Or(res.Poll, interval), res.Jitter)
	}
	*backoff = devclient.NextBackoff(*backoff)
	var te *devclient.TransientError
	var retryAfter time.Duration
	if errors.As(err, &te) {
		retryAfter = te.RetryAfter
	}
	return devclient.RetryWait(*backoff, retryAfter)
}

// fleetPhase is a stretch of a fleet run whose check-ins are counted apart.
type fleetPhase struct {
	name                       string
	checkins, changed, limited atomic.Int64 // answered; told of a new director view (200, not 304); refused with 429
	errors, renewals           atomic.Int64 // failed otherwise; token renewals
	mu                         sync.Mutex
	latencies                  []time.Duration
	firstErr                   error
	perReplica                 []atomic.Int64
}

func (p *fleetPhase) record(r int, lat time.Duration, res devclient.CheckinResult, err error, renewed bool) {
	if renewed {
		p.renewals.Add(1)
	}
	if err != nil {
		var se *devclient.ServerError
		if errors.As(err, &se) && se.Status == http.StatusTooManyRequests {
			p.limited.Add(1)
			return
		}
		p.errors.Add(1)
		p.mu.Lock()
		if p.firstErr == nil {
			p.firstErr = err
		}
		p.mu.Unlock()
		return
	}
	p.checkins.Add(1)
	p.perReplica[r].Add(1)
	if res.Status == http.StatusOK {
		p.changed.Add(1)
	}
	p.mu.Lock()
	p.latencies = append(p.latencies, lat)
	p.mu.Unlock()
}

func (p *fleetPhase) report(out io.Writer, took time.Duration) {
	n := p.checkins.Load()
	fmt.Fprintf(out, "%s, %.1f s: %d check-ins (%.1f/s), %d told of a new director view (200), %d refused with 429 (Retry-After), %d other errors, %d token renewals\n",
		p.name, took.Seconds(), n, float64(n)/took.Seconds(), p.changed.Load(), p.limited.Load(), p.errors.Load(), p.renewals.Load())
	if p.firstErr != nil {
		fmt.Fprintf(out, "  first error: %v\n", p.firstErr)
	}
	if l := p.latencies; len(l) > 0 {
		slices.Sort(l)
		fmt.Fprintf(out, "  check-in latency: p50 %s, p99 %s, max %s\n", l[len(l)/2].Round(time.Microsecond), l[len(l)*99/100].Round(time.Microsecond), l[len(l)-1].Round(time.Microsecond))
	}
}

// fleetTransport is the devices' HTTP transport. Over TLS every check-in opens a connection of
// its own (a device polling every 30 minutes keeps none open), sends its one request and closes
// it, resuming a TLS session from the simulator's session cache; the server's work for a
// resumption is the same whichever simulated device presents the ticket. handshakes and resumed
// count them. (http.Transport with keep-alives off dials more connections than it uses when
// requests queue, each a handshake for the server: measured 2.4 per check-in at 500 a second.)
type fleetTransport struct {
	http.RoundTripper
	tls                 *tls.Config
	handshakes, resumed atomic.Int64
}

func newFleetTransport(pool *x509.CertPool, conns int) *fleetTransport {
	ft := &fleetTransport{RoundTripper: benchHTTPClient(conns).Transport}
	if pool != nil {
		ft.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(64)}
		ft.RoundTripper = oneShot{ft}
	}
	return ft
}

// oneShot sends each request on a TLS connection of its own, closed with the response's body.
type oneShot struct{ ft *fleetTransport }

func (o oneShot) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		defer req.Body.Close()
	}
	c, err := (&tls.Dialer{Config: o.ft.tls}).DialContext(req.Context(), "tcp", req.URL.Host)
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	o.ft.handshakes.Add(1)
	if tc.ConnectionState().DidResume {
		o.ft.resumed.Add(1)
	}
	if d, ok := req.Context().Deadline(); ok {
		tc.SetDeadline(d) //nolint:errcheck // a closed connection fails the write below
	}
	req.Close = true // Connection: close
	if err := req.Write(tc); err != nil {
		tc.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		tc.Close()
		return nil, err
	}
	resp.Body = closeBoth{resp.Body, tc}
	return resp, nil
}

type closeBoth struct {
	io.ReadCloser
	c io.Closer
}

func (b closeBoth) Close() error {
	err := b.ReadCloser.Close()
	b.c.Close()
	return err
}

// scrape reads the counters of a server's /metrics whose names (with labels) are in want.
func scrape(ctx context.Context, hc *http.Client, base string, want ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: %s", base, resp.Status)
	}
	got := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || !slices.Contains(want, name) {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			got[name] = f
		}
	}
	return got, sc.Err()
}

// The counters of /metrics that say what a replica wrote to its database.
const (
	metricRowsLastSeen = `upkeep_db_rows_written_total{op="last_seen"}`
	metricFlushes      = `upkeep_db_seconds_count{op="flush_last_seen"}`
)

// Fleet runs `upkeep bench fleet`.
func Fleet(ctx context.Context, cfg HTTPConfig, out io.Writer) error {
	if cfg.Devices < 1 || cfg.Replicas < 1 || cfg.Interval <= 0 || cfg.Duration <= 0 || cfg.Enrolers < 1 || cfg.Outage < 0 {
		return errors.New("bench fleet: --devices, --replicas, --interval, --duration and --enrolers must be positive, --outage not negative")
	}
	if cfg.SQLite && cfg.Replicas != 1 {
		return errors.New("bench fleet --sqlite runs one node: --replicas 1 (replicas share a PostgreSQL database)")
	}
	if !cfg.SQLite && cfg.Postgres == "" {
		return errors.New("bench fleet needs PostgreSQL for replicas: --postgres URL of an existing database (the bench creates and drops its own next to it), or --sqlite")
	}
	stack, err := newBenchStack()
	if err != nil {
		return err
	}
	defer stack.close()
	if cfg.Server != "" {
		stack.exe = cfg.Server
	}
	// A real fleet comes from as many addresses as devices; here every device is 127.0.0.1.
	args := []string{"--poll-seconds", strconv.Itoa(int(cfg.Interval.Seconds())), "--max-per-ip", "1000000", "--no-delta-jobs"}
	var pool *x509.CertPool
	if cfg.TLS {
		certFile, keyFile := filepath.Join(stack.dir, "tls-cert.pem"), filepath.Join(stack.dir, "tls-key.pem")
		if pool, err = selfSignedCert(certFile, keyFile); err != nil {
			return err
		}
		args = append(args, "--tls-cert", certFile, "--tls-key", keyFile)
	}
	var pg *pgx.Conn
	dbName := "SQLite"
	if !cfg.SQLite {
		dbName = fmt.Sprintf("upkeep_bench_%d", os.Getpid())
		dbURL, drop, err := benchDatabase(ctx, cfg.Postgres, dbName)
		if err != nil {
			return err
		}
		stack.after = append(stack.after, drop)
		args = append(args, "--db", dbURL)
		if pg, err = pgx.Connect(ctx, cfg.Postgres); err != nil {
			return err
		}
		defer pg.Close(context.Background())
	}
	replicas := make([]*ServerProcess, cfg.Replicas)
	start := func(i int, addr string) error {
		name := fmt.Sprintf("replica-%d", i+1)
		a := slices.Clone(args)
		if addr != "" {
			a = append(a, "--addr", addr)
		}
		p, err := StartServerProcess(ctx, stack.exe, filepath.Join(stack.dir, name), stack.keys, filepath.Join(stack.dir, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano())), a...)
		if err != nil {
			return fmt.Errorf("start server %s: %w", name, err)
		}
		stack.servers = append(stack.servers, p)
		replicas[i] = p
		return nil
	}
	for i := range replicas { // one after the other: the first one migrates the new database
		if err := start(i, ""); err != nil {
			return err
		}
		rss, _ := rssKiB(replicas[i].cmd.Process.Pid)
		fmt.Fprintf(out, "replica %d: pid %d on %s (%s), RSS %d KiB at start\n", i+1, replicas[i].cmd.Process.Pid, replicas[i].URL, dbName, rss)
	}
	bases := make([]string, len(replicas))
	for i, p := range replicas {
		bases[i] = p.URL
	}
	setup := &http.Client{Transport: newFleetTransport(nil, cfg.Enrolers), Timeout: time.Minute}
	if pool != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		tr.MaxIdleConnsPerHost = cfg.Enrolers
		setup = &http.Client{Transport: tr, Timeout: time.Minute}
	}
	_, tok, err := benchEnrollTokenWith(ctx, replicas[0], setup)
	if err != nil {
		return err
	}

	t0 := time.Now()
	devs, err := enrolBenchDevices(ctx, benchClients(setup, bases...), tok, cfg.Devices, cfg.Enrolers)
	if err != nil {
		return err
	}
	enrolTook := time.Since(t0)
	fmt.Fprintf(out, "enrolled %d devices through %d replicas in %s (%.0f/s, %d in flight)\n",
		cfg.Devices, len(replicas), enrolTook.Round(time.Millisecond), float64(cfg.Devices)/enrolTook.Seconds(), cfg.Enrolers)
	for i, p := range replicas {
		rss, _ := rssKiB(p.cmd.Process.Pid)
		fmt.Fprintf(out, "replica %d RSS after enrolment: %d KiB\n", i+1, rss)
	}

	// Poll: each device's first check-in falls at random within one interval, the next ones when
	// the previous answer's hints say, or the agent's backoff after a failure (nextPoll), each
	// to a random replica.
	ft := newFleetTransport(pool, 64)
	pollers := benchClients(&http.Client{Transport: ft, Timeout: time.Minute}, bases...)
	newPhase := func(name string) *fleetPhase {
		return &fleetPhase{name: name, perReplica: make([]atomic.Int64, len(replicas))}
	}
	var phase atomic.Pointer[fleetPhase] // nil: not counted (warm-up)
	backoff := make([]time.Duration, len(devs))
	down := make([]bool, len(devs)) // the device's last check-in failed
	var nDown, everDown atomic.Int64
	var qmu sync.Mutex
	q := make(pollQueue, 0, len(devs))
	begin := time.Now()
	for i := range devs {
		q = append(q, pollItem{at: begin.Add(time.Duration(mrand.Int64N(int64(cfg.Interval)))), dev: int32(i)})
	}
	heap.Init(&q)
	pctx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	sem := make(chan struct{}, 4096)
	var wg sync.WaitGroup
	poll := func(i int) {
		defer wg.Done()
		defer func() { <-sem }()
		d := devs[i]
		r := mrand.IntN(len(bases))
		renew := d.token == "" || !time.Now().Add(time.Minute).Before(d.expires)
		t := time.Now()
		res, err := d.checkin(pctx, pollers[r])
		lat := time.Since(t)
		if pctx.Err() != nil {
			return
		}
		next := nextPoll(res, err, cfg.Interval, &backoff[i])
		switch {
		case err != nil && !down[i]:
			down[i] = true
			nDown.Add(1)
			everDown.Add(1)
		case err == nil && down[i]:
			down[i] = false
			nDown.Add(-1)
		}
		if p := phase.Load(); p != nil {
			p.record(r, lat, res, err, renew && d.token != "" && err == nil)
		}
		qmu.Lock()
		heap.Push(&q, pollItem{at: time.Now().Add(next), dev: int32(i)})
		qmu.Unlock()
	}
	wg.Add(1)
	go func() { // the dispatcher
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case now := <-tick.C:
				for {
					qmu.Lock()
					if len(q) == 0 || q[0].at.After(now) {
						qmu.Unlock()
						break
					}
					it := heap.Pop(&q).(pollItem)
					qmu.Unlock()
					select {
					case sem <- struct{}{}:
					case <-pctx.Done():
						return
					}
					wg.Add(1)
					go poll(int(it.dev))
				}
			}
		}
	}()
	fmt.Fprintf(out, "polling: %d devices every %s, spread as the server suggests (%.0f check-ins/s expected), TLS %t, warm-up %s, window %s\n",
		len(devs), cfg.Interval, float64(len(devs))/cfg.Interval.Seconds(), cfg.TLS, cfg.Warmup, cfg.Duration)
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := sleep(cfg.Warmup); err != nil {
		return err
	}
	type sample struct {
		at      time.Time
		cpu     []time.Duration
		self    time.Duration
		pg      pgStats
		metrics []map[string]float64
	}
	take := func() (sample, error) {
		s := sample{at: time.Now()}
		for i, p := range replicas {
			c, err := procCPU(p.cmd.Process.Pid)
			if err != nil {
				return s, err
			}
			s.cpu = append(s.cpu, c)
			m, err := scrape(ctx, setup, bases[i], metricRowsLastSeen, metricFlushes)
			if err != nil {
				return s, err
			}
			s.metrics = append(s.metrics, m)
		}
		var err error
		if s.self, err = procCPU(0); err != nil {
			return s, err
		}
		if pg != nil {
			s.pg, err = readPGStats(ctx, pg, dbName)
		}
		return s, err
	}
	a, err := take()
	if err != nil {
		return err
	}
	h0, r0 := ft.handshakes.Load(), ft.resumed.Load()
	steady := newPhase("steady state")
	phase.Store(steady)
	if err := sleep(cfg.Duration); err != nil {
		return err
	}
	phase.Store(nil)
	b, err := take()
	if err != nil {
		return err
	}
	win := b.at.Sub(a.at)
	fmt.Fprintln(out)
	steady.report(out, win)
	if h := ft.handshakes.Load() - h0; h > 0 {
		fmt.Fprintf(out, "  TLS: %d connections, %.1f%% resumed a session\n", h, 100*float64(ft.resumed.Load()-r0)/float64(h))
	}
	var lastSeen, flushes float64
	for i, p := range replicas {
		cpu := b.cpu[i] - a.cpu[i]
		rss, hwm := rssKiB(p.cmd.Process.Pid)
		per := time.Duration(0)
		if k := steady.perReplica[i].Load(); k > 0 {
			per = cpu / time.Duration(k)
		}
		fmt.Fprintf(out, "replica %d: %d check-ins, CPU %.2f s = %.1f%% of one core (%s per check-in), RSS %d KiB (peak %d KiB)\n",
			i+1, steady.perReplica[i].Load(), cpu.Seconds(), 100*cpu.Seconds()/win.Seconds(), per.Round(time.Microsecond), rss, hwm)
		lastSeen += b.metrics[i][metricRowsLastSeen] - a.metrics[i][metricRowsLastSeen]
		flushes += b.metrics[i][metricFlushes] - a.metrics[i][metricFlushes]
	}
	self := b.self - a.self
	fmt.Fprintf(out, "load generator (this process): CPU %.1f%% of one core\n", 100*self.Seconds()/win.Seconds())
	fmt.Fprintf(out, "database writes of the check-ins (%s): %.1f last-seen rows/s in %.2f flush transactions/s\n", dbName, lastSeen/win.Seconds(), flushes/win.Seconds())
	if pg != nil {
		w, c, r := b.pg.Writes-a.pg.Writes, b.pg.Commits-a.pg.Commits, b.pg.Reads-a.pg.Reads
		fmt.Fprintf(out, "PostgreSQL %s, every writer: %.1f row writes/s (inserted+updated+deleted), %.1f commits/s, %.1f rows fetched/s\n",
			dbName, float64(w)/win.Seconds(), float64(c)/win.Seconds(), float64(r)/win.Seconds())
	}
	if cfg.Outage == 0 {
		stopPolling()
		wg.Wait()
		return nil
	}

	// The outage: every replica stops; devices that poll meanwhile fail and back off as the
	// agent does. Then the replicas start again on the same addresses and data, and every device
	// that noticed must have checked in again within FleetRecoveryLimit.
	fmt.Fprintf(out, "\noutage: stopping %d replica(s) for %s\n", len(replicas), cfg.Outage)
	everDown.Store(nDown.Load())
	outage := newPhase("outage")
	phase.Store(outage)
	down0 := time.Now()
	for _, p := range replicas {
		p.Stop()
	}
	if err := sleep(cfg.Outage); err != nil {
		return err
	}
	for i := range replicas {
		u, err := url.Parse(bases[i])
		if err != nil {
			return err
		}
		if err := start(i, u.Host); err != nil {
			return err
		}
	}
	back := time.Now()
	noticed := everDown.Load()
	recovery := newPhase("recovery")
	phase.Store(recovery)
	fmt.Fprintf(out, "replicas back after %s; %d devices noticed the outage\n", back.Sub(down0).Round(time.Second), noticed)
	a, err = take()
	if err != nil {
		return err
	}
	var recovered time.Duration
	for tick := time.NewTicker(time.Second); ; {
		if nDown.Load() == 0 {
			recovered = time.Since(back)
			tick.Stop()
			break
		}
		if time.Since(back) > FleetRecoveryLimit+time.Minute {
			tick.Stop()
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	phase.Store(nil)
	b, err = take()
	if err != nil {
		return err
	}
	stopPolling()
	wg.Wait()
	outage.report(out, back.Sub(down0))
	took := b.at.Sub(a.at)
	recovery.report(out, took)
	if recovered > 0 {
		fmt.Fprintf(out, "every device that noticed the outage (%d, %d of them after the restart) checked in again %s after the replicas were back (limit %s)\n",
			everDown.Load(), everDown.Load()-noticed, recovered.Round(time.Second), FleetRecoveryLimit)
	} else {
		fmt.Fprintf(out, "NOT RECOVERED: %d devices still failing %s after the replicas were back (limit %s)\n", nDown.Load(), time.Since(back).Round(time.Second), FleetRecoveryLimit)
	}
	for i, p := range replicas {
		cpu := b.cpu[i] - a.cpu[i]
		rss, hwm := rssKiB(p.cmd.Process.Pid)
		fmt.Fprintf(out, "replica %d during the recovery: CPU %.1f%% of one core, RSS %d KiB (peak %d KiB)\n", i+1, 100*cpu.Seconds()/took.Seconds(), rss, hwm)
	}
	if recovered == 0 {
		return fmt.Errorf("bench fleet: devices did not all reconnect within %s of the outage", FleetRecoveryLimit)
	}
	return nil
}
