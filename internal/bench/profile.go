package bench

import (
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
)

// CPU profiles for the benches. UPKEEP_CPUPROFILE=FILE profiles the whole run of any command;
// with UPKEEP_CPUPROFILE_PHASE=verify|poll|rollout as well, `upkeep bench rollout` profiles only
// that phase, in its own process and (by SIGUSR1 to start, SIGUSR2 to stop) in the server
// process it started, which writes FILE.server.
var prof struct {
	sync.Mutex
	f *os.File
}

func startProfile(path string) {
	prof.Lock()
	defer prof.Unlock()
	if prof.f != nil {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		return
	}
	if pprof.StartCPUProfile(f) != nil {
		f.Close()
		return
	}
	prof.f = f
}

func StopProfile() {
	prof.Lock()
	defer prof.Unlock()
	if prof.f == nil {
		return
	}
	pprof.StopCPUProfile()
	prof.f.Close()
	prof.f = nil
}

// SetupProfiling starts the profile of the whole run, or waits for the signals of a phase.
func SetupProfiling() {
	p := os.Getenv("UPKEEP_CPUPROFILE")
	if p == "" {
		return
	}
	if os.Getenv("UPKEEP_CPUPROFILE_PHASE") == "" {
		startProfile(p)
		return
	}
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for s := range ch {
			if s == syscall.SIGUSR1 {
				startProfile(p)
			} else {
				StopProfile()
			}
		}
	}()
}

// ProfilePhase profiles this process and the server process pid while the named phase runs,
// when UPKEEP_CPUPROFILE_PHASE names it; call the function it returns when the phase ends.
func ProfilePhase(name string, pid int) func() {
	p := os.Getenv("UPKEEP_CPUPROFILE")
	if p == "" || os.Getenv("UPKEEP_CPUPROFILE_PHASE") != name {
		return func() {}
	}
	startProfile(p)
	if proc, err := os.FindProcess(pid); err == nil {
		proc.Signal(syscall.SIGUSR1) //nolint:errcheck // best effort
	}
	return func() {
		StopProfile()
		if proc, err := os.FindProcess(pid); err == nil {
			proc.Signal(syscall.SIGUSR2) //nolint:errcheck // best effort
		}
	}
}
