package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"
)

// The net/http floor: a Go HTTP server that does no work of its own (it reads the request body,
// checks that an Authorization header is there and answers 304), on the same listener settings
// and TLS configuration as `upkeep serve`. `bench checkin` measures it next to nginx and the
// server, so the table shows how much of the gap to nginx is net/http's (and crypto/tls's)
// and how much is the check-in's.

const floorReady = "http floor listening on "

// ServeHTTPFloor listens on addr (HTTPS when certFile and keyFile are set) and serves the floor
// until ctx ends. It prints floorReady and its URL once it listens.
func ServeHTTPFloor(ctx context.Context, addr, certFile, keyFile string, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	scheme := "http"
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
		scheme = "https"
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10)); err != nil || r.Header.Get("Authorization") == "" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			w.Header().Set("ETag", `"floor"`)
			w.WriteHeader(http.StatusNotModified)
		})}
	fmt.Fprintf(out, "%s%s://%s\n", floorReady, scheme, ln.Addr())
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// floorProcess is `upkeep bench http-floor` as a child process, like the servers it is measured
// next to.
type floorProcess struct {
	cmd *exec.Cmd
	URL string
}

func startFloor(ctx context.Context, exe string, tlsArgs []string) (*floorProcess, error) {
	cmd := exec.CommandContext(ctx, exe, append([]string{"bench", "http-floor", "--addr", "127.0.0.1:0"}, tlsArgs...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &floorProcess{cmd: cmd}
	sc := bufio.NewScanner(out)
	for p.URL == "" && sc.Scan() {
		p.URL, _ = strings.CutPrefix(sc.Text(), floorReady)
	}
	go io.Copy(io.Discard, out) //nolint:errcheck // drain
	if p.URL == "" {
		p.Stop()
		return nil, fmt.Errorf("the http floor did not start")
	}
	return p, nil
}

func (p *floorProcess) Stop() {
	p.cmd.Process.Signal(os.Interrupt) //nolint:errcheck // best effort
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }() //nolint:errcheck // the exit status says nothing here
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill() //nolint:errcheck // it would not stop
	}
}
