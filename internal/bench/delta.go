package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"upkeep.dev/upkeep/internal/delta"
)

// DeltaConfig configures `upkeep bench delta`.
type DeltaConfig struct {
	Pairs [][2]string // (old, new) image files
	Exe   string      // this binary, re-executed for each of its own steps (so RSS is its own)
	Dir   string      // scratch folder
	Out   io.Writer
}

// DeltaResult is one tool on one pair.
type DeltaResult struct {
	Pair, Tool   string
	PatchBytes   int64
	Download     int64 // bytes a device downloads (the patch, or index plus missing chunks)
	GenSeconds   float64
	GenRSSKiB    int64
	ApplySeconds float64
	ApplyRSSKiB  int64
	ApplyIdleKiB int64 // RSS of the applying process before it applied (Upkeep only)
	ImageBytes   int64
	Note         string
}

// Delta measures the per-pair delta, the chunked form and Debian's bsdiff, xdelta3, zstd
// --patch-from and casync on each pair, in one run, each in a process of its own so that its peak
// RSS (getrusage of the child) is its own.
func Delta(ctx context.Context, cfg DeltaConfig) ([]DeltaResult, error) {
	var all []DeltaResult
	for _, p := range cfg.Pairs {
		old, dst := p[0], p[1]
		st, err := os.Stat(dst)
		if err != nil {
			return nil, err
		}
		size := st.Size()
		name := filepath.Base(old) + "→" + filepath.Base(dst)
		want, err := fileSHA(dst)
		if err != nil {
			return nil, err
		}
		d := filepath.Join(cfg.Dir, strings.ReplaceAll(filepath.Base(dst), ".", "_"))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		out := filepath.Join(d, "out")
		type tool struct {
			name       string
			patch      string
			gen, apply []string
			download   func() (int64, error)
		}
		tools := []tool{
			{name: "upkeep upkdlt2 (per pair)", patch: filepath.Join(d, "p.upkdlt2"),
				gen:   []string{cfg.Exe, "bench", "delta-step", "gen", old, dst, filepath.Join(d, "p.upkdlt2")},
				apply: []string{cfg.Exe, "bench", "delta-step", "apply", old, filepath.Join(d, "p.upkdlt2"), out, strconv.FormatInt(size, 10)}},
			{name: "upkeep caibx (chunked)", patch: filepath.Join(d, "new.caibx"),
				gen:   []string{cfg.Exe, "bench", "delta-step", "index", dst, filepath.Join(d, "new.caibx")},
				apply: []string{cfg.Exe, "bench", "delta-step", "assemble", old, filepath.Join(d, "old.caibx"), filepath.Join(d, "new.caibx"), dst, out}},
			{name: "bsdiff 4.3 (Debian)", patch: filepath.Join(d, "p.bsdiff"),
				gen: []string{"bsdiff", old, dst, filepath.Join(d, "p.bsdiff")}, apply: []string{"bspatch", old, out, filepath.Join(d, "p.bsdiff")}},
			{name: "xdelta3 -9 (Debian)", patch: filepath.Join(d, "p.xdelta"),
				gen: []string{"xdelta3", "-9", "-f", "-B", strconv.FormatInt(max(size, 1<<20), 10), "-e", "-s", old, dst, filepath.Join(d, "p.xdelta")}, apply: []string{"xdelta3", "-f", "-B", strconv.FormatInt(max(size, 1<<20), 10), "-d", "-s", old, filepath.Join(d, "p.xdelta"), out}},
			{name: "zstd -19 --patch-from (Debian)", patch: filepath.Join(d, "p.zst"),
				gen: []string{"zstd", "-q", "-f", "-19", "--long=31", "--patch-from=" + old, dst, "-o", filepath.Join(d, "p.zst")}, apply: []string{"zstd", "-q", "-f", "-d", "--long=31", "--patch-from=" + old, filepath.Join(d, "p.zst"), "-o", out}},
		}
		// The source's own index exists beforehand (made when it was published): not timed.
		if _, _, err := runMeasured(ctx, []string{cfg.Exe, "bench", "delta-step", "index", old, filepath.Join(d, "old.caibx")}); err != nil {
			return nil, err
		}
		if _, err := exec.LookPath("casync"); err == nil {
			store := filepath.Join(d, "casync.castr")
			os.RemoveAll(store)
			seedStore := filepath.Join(d, "casync-seed.caibx")
			tools = append(tools, tool{name: "casync 2 (Debian, chunk store)", patch: filepath.Join(d, "casync.caibx"),
				gen:   []string{"casync", "make", "--store=" + store, filepath.Join(d, "casync.caibx"), dst},
				apply: []string{"casync", "extract", "--store=" + store, "--seed=" + old, filepath.Join(d, "casync.caibx"), out},
				download: func() (int64, error) { // compressed chunks not in the seed, plus the index
					_ = seedStore
					return casyncNeed(filepath.Join(d, "old.caibx"), filepath.Join(d, "casync.caibx"), store)
				}})
		}
		for _, t := range tools {
			if _, err := exec.LookPath(t.gen[0]); err != nil {
				all = append(all, DeltaResult{Pair: name, Tool: t.name, Note: "not installed"})
				continue
			}
			os.Remove(out)
			r := DeltaResult{Pair: name, Tool: t.name, ImageBytes: size}
			start := time.Now()
			rss, stdout, err := runMeasured(ctx, t.gen)
			if err != nil {
				r.Note = err.Error()
				all = append(all, r)
				continue
			}
			r.GenSeconds, r.GenRSSKiB = time.Since(start).Seconds(), rss
			if fi, err := os.Stat(t.patch); err == nil {
				r.PatchBytes = fi.Size()
			}
			r.Download = r.PatchBytes
			start = time.Now()
			rss, stdout, err = runMeasured(ctx, t.apply)
			r.ApplySeconds, r.ApplyRSSKiB = time.Since(start).Seconds(), rss
			if err != nil {
				r.Note = err.Error()
			} else if got, _ := fileSHA(out); got != want {
				r.Note = "applied image differs"
			}
			var step stepReport
			if json.Unmarshal(stdout, &step) == nil && step.HWMKiB > 0 {
				r.ApplyIdleKiB, r.ApplyRSSKiB = step.IdleKiB, step.HWMKiB
				if step.Downloaded > 0 || strings.Contains(t.name, "caibx") {
					r.Download = step.Downloaded + r.PatchBytes
				}
			}
			if t.download != nil {
				if n, err := t.download(); err == nil {
					r.Download = n
				}
			}
			all = append(all, r)
		}
		os.Remove(out)
	}
	printDelta(cfg.Out, all)
	return all, nil
}

func casyncNeed(oldIndex, newIndex, store string) (int64, error) {
	// casync's own index lists the chunks; those whose id the old image's index lacks are
	// fetched from the store, compressed. Both indexes use casync's default chunker.
	f, err := os.Open(newIndex)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, _ := f.Stat()
	nx, err := readIndexAnyLength(f)
	if err != nil {
		return 0, err
	}
	of, err := os.Open(oldIndex)
	if err != nil {
		return 0, err
	}
	defer of.Close()
	ox, err := readIndexAnyLength(of)
	if err != nil {
		return 0, err
	}
	have := map[delta.ChunkID]bool{}
	for _, c := range ox.Chunks {
		have[c.ID] = true
	}
	n := st.Size()
	for _, c := range nx.Chunks {
		if have[c.ID] {
			continue
		}
		id := fmt.Sprintf("%x", c.ID[:])
		if fi, err := os.Stat(filepath.Join(store, id[:4], id+".cacnk")); err == nil {
			n += fi.Size()
		}
		have[c.ID] = true
	}
	return n, nil
}

func readIndexAnyLength(f *os.File) (*delta.Index, error) {
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	// the length is the table's last offset: 40 bytes before the 48-byte tail item
	if len(b) < 48+16+40+40 {
		return nil, errors.New("short index")
	}
	last := int64(0)
	for i := 0; i < 8; i++ {
		last |= int64(b[len(b)-40-40+i]) << (8 * i)
	}
	return delta.ReadIndex(bytes.NewReader(b), last)
}

type stepReport struct {
	IdleKiB, HWMKiB, Downloaded int64
}

// runMeasured runs argv and returns its peak RSS (KiB) and stdout.
func runMeasured(ctx context.Context, argv []string) (int64, []byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var rss int64
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rss = ru.Maxrss
		}
	}
	if err != nil {
		return rss, nil, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return rss, stdout.Bytes(), nil
}

func fileSHA(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

func printDelta(w io.Writer, rs []DeltaResult) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "pair\ttool\tpatch\tdownload (of image)\tgen s\tgen RSS MiB\tapply s\tapply RSS MiB (above idle)\tnote")
	for _, r := range rs {
		share := ""
		if r.ImageBytes > 0 {
			share = fmt.Sprintf("%.1f%%", 100*float64(r.Download)/float64(r.ImageBytes))
		}
		above := ""
		if r.ApplyIdleKiB > 0 {
			above = fmt.Sprintf(" (+%.1f)", float64(r.ApplyRSSKiB-r.ApplyIdleKiB)/1024)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d (%s)\t%.2f\t%.1f\t%.2f\t%.1f%s\t%s\n", r.Pair, r.Tool, r.PatchBytes, r.Download, share,
			r.GenSeconds, float64(r.GenRSSKiB)/1024, r.ApplySeconds, float64(r.ApplyRSSKiB)/1024, above, r.Note)
	}
	tw.Flush()
}

// DeltaStep runs one measured step of `bench delta` in this process (the hidden command
// `upkeep bench delta-step`): gen OLD NEW PATCH | apply OLD PATCH OUT LENGTH | index IMG OUT |
// assemble OLD OLDINDEX NEWINDEX NEW OUT. apply and assemble print a JSON stepReport: the
// process's RSS before it started and its peak (VmHWM) after.
func DeltaStep(ctx context.Context, args []string, stdout io.Writer) error {
	idle := procStatusKiB("VmRSS")
	rep := func(downloaded int64) error {
		return json.NewEncoder(stdout).Encode(stepReport{IdleKiB: idle, HWMKiB: procStatusKiB("VmHWM"), Downloaded: downloaded})
	}
	switch {
	case len(args) == 4 && args[0] == "gen":
		old, err := os.Open(args[1])
		if err != nil {
			return err
		}
		defer old.Close()
		ost, _ := old.Stat()
		dst, err := os.Open(args[2])
		if err != nil {
			return err
		}
		defer dst.Close()
		dstat, _ := dst.Stat()
		out, err := os.Create(args[3])
		if err != nil {
			return err
		}
		if _, err := delta.Generate(ctx, old, ost.Size(), dst, dstat.Size(), out, delta.GenOptions{}); err != nil {
			return err
		}
		return out.Close()
	case len(args) == 5 && args[0] == "apply":
		old, err := os.Open(args[1])
		if err != nil {
			return err
		}
		defer old.Close()
		ost, _ := old.Stat()
		p, err := os.Open(args[2])
		if err != nil {
			return err
		}
		defer p.Close()
		n, _ := strconv.ParseInt(args[4], 10, 64)
		out, err := os.Create(args[3])
		if err != nil {
			return err
		}
		a, err := delta.NewApplier()
		if err != nil {
			return err
		}
		bw := bufio.NewWriterSize(out, 256<<10)
		if _, err := a.Apply(ctx, old, ost.Size(), n, bufio.NewReaderSize(p, 256<<10), bw, delta.ApplyState{}, nil); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
		return rep(0)
	case len(args) == 3 && args[0] == "index":
		f, err := os.Open(args[1])
		if err != nil {
			return err
		}
		defer f.Close()
		x, err := delta.MakeIndex(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			return err
		}
		out, err := os.Create(args[2])
		if err != nil {
			return err
		}
		if _, err := x.WriteTo(out); err != nil {
			return err
		}
		return out.Close()
	case len(args) == 6 && args[0] == "assemble":
		old, err := os.Open(args[1])
		if err != nil {
			return err
		}
		defer old.Close()
		ost, _ := old.Stat()
		src, err := readIndexFile(args[2], ost.Size())
		if err != nil {
			return err
		}
		dst, err := os.Open(args[4])
		if err != nil {
			return err
		}
		defer dst.Close()
		dstat, _ := dst.Stat()
		dx, err := readIndexFile(args[3], dstat.Size())
		if err != nil {
			return err
		}
		out, err := os.Create(args[5])
		if err != nil {
			return err
		}
		a := &delta.Assembler{Dst: dx, Src: src, Active: old}
		// the "network": ranges of the new image, read from its file
		fetch := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			return io.NopCloser(io.NewSectionReader(dst, off, n)), nil
		}
		bw := bufio.NewWriterSize(out, 256<<10)
		st, err := a.Assemble(ctx, fetch, bw, delta.ChunkState{}, nil)
		if err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
		return rep(st.Downloaded)
	}
	return fmt.Errorf("delta-step: bad arguments %q", args)
}

func readIndexFile(path string, length int64) (*delta.Index, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return delta.ReadIndex(f, length)
}

func procStatusKiB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
