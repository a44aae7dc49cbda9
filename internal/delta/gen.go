package delta

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"runtime/debug"
)

// GenOptions tune Generate.
type GenOptions struct {
	// MaxIndexSlots bounds the source index (8 bytes a slot): 1<<23 slots, 64 MiB, by
	// default. A larger source is sampled more sparsely, so memory stays put and only matches
	// shorter than the sampling step are missed.
	MaxIndexSlots int
	// Progress, if set, is called with the destination bytes done after each segment.
	Progress func(done int64)
	// Sampled makes images up to WholeMax go through the sampled index too (tests of that
	// path); by default they are matched whole (whole.go).
	Sampled bool
}

const (
	hashWindow = 32 // bytes hashed to find a match
	minStep    = 32 // source positions indexed: every minStep bytes (or sparser)
	hashMul    = 0x100000001b3
	// A fuzzy extension stops this many bytes after its best point: bsdiff's rule (keep
	// extending while matches outnumber mismatches), bounded.
	fuzzSlack = 64
	// maxMatch bounds one match, so that the destination's buffer stays small; the next match
	// continues it.
	maxMatch = 1 << 20
)

// GenStats describes a generated patch.
type GenStats struct {
	PatchLength     int64
	Copied, Literal int64 // destination bytes from the source (diff regions), and new
	Segments        int
	IndexBytes      int64 // memory of the source index
	SourceStep      int   // source sampling step
}

// Generate writes a patch that turns old (oldLen bytes, read at random: a file) into the
// destination read from dst (destLen bytes, read once, in order). Memory: the source index
// (GenOptions.MaxIndexSlots) plus a few segment buffers and the LZMA2 encoder, whatever the image
// sizes. While it runs, the process's garbage collector targets half the live heap instead of
// all of it: the index is most of that heap and lives throughout, so the default would leave
// room for as much garbage again (206 MB peak instead of 172 MB on a 160 MiB pair).
func Generate(ctx context.Context, old io.ReaderAt, oldLen int64, dst io.Reader, destLen int64, w io.Writer, o GenOptions) (*GenStats, error) {
	defer debug.SetGCPercent(debug.SetGCPercent(50))
	whole := !o.Sampled && oldLen <= WholeMax && destLen <= WholeMax
	g, err := newGen(old, oldLen, destLen, o)
	if err != nil {
		return nil, err
	}
	var oldBytes, newBytes []byte
	if whole {
		oldBytes = make([]byte, oldLen)
		if k, err := old.ReadAt(oldBytes, 0); int64(k) != oldLen {
			return nil, fmt.Errorf("read source: %w", err)
		}
		if newBytes, err = readAllBounded(dst, destLen); err != nil {
			return nil, err
		}
	} else if err := g.index(ctx); err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	var hdr [HeaderSize]byte
	copy(hdr[:], patchMagic)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(oldLen))
	binary.LittleEndian.PutUint64(hdr[16:], uint64(destLen))
	bw.Write(hdr[:]) //nolint:errcheck // Flush reports it
	g.out, g.stats.PatchLength = bw, int64(HeaderSize)
	g.progress = o.Progress
	if whole {
		if err := g.generateWhole(ctx, oldBytes, newBytes); err != nil {
			return nil, err
		}
	} else if err := g.scan(ctx, bufio.NewReaderSize(dst, 1<<20), destLen); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return &g.stats, nil
}

type gen struct {
	old      io.ReaderAt
	oldLen   int64
	step     int64
	mask     uint64
	pos      []uint32 // source position/step + 1; 0: empty
	check    []uint32 // high bits of the window hash
	src      srcCache
	out      io.Writer
	progress func(int64)
	stats    GenStats

	// the segment being built
	recs, lits, diffs []byte
	runs, vals        []byte       // the diff regions split (splitDiffs), reused
	raw               []byte       // a segment's raw bytes, reused
	comp              bytes.Buffer // their compressed form, reused
	segOut            int64
	lastSrc           int64 // source end of the previous record in this segment
	done              int64
	pw                int64 // hashMul^(hashWindow-1)
}

func newGen(old io.ReaderAt, oldLen, destLen int64, o GenOptions) (*gen, error) {
	maxSlots := o.MaxIndexSlots
	if maxSlots <= 0 {
		maxSlots = 1 << 23
	}
	step := int64(minStep)
	for oldLen/step > int64(maxSlots)/2 {
		step *= 2
	}
	slots := 1 << bits.Len64(uint64(max(oldLen/step*2, 1024)-1))
	slots = min(slots, 1<<bits.Len64(uint64(maxSlots)-1))
	g := &gen{old: old, oldLen: oldLen, step: step, mask: uint64(slots - 1), pos: make([]uint32, slots), check: make([]uint32, slots)}
	g.src = srcCache{r: old, n: oldLen, buf: make([]byte, 0, 1<<20)}
	p := int64(1)
	for range hashWindow - 1 {
		p *= hashMul
	}
	g.pw = p
	g.stats.IndexBytes, g.stats.SourceStep = int64(slots)*8, int(step)
	if oldLen/step >= 1<<32-1 {
		return nil, fmt.Errorf("source of %d bytes is too large", oldLen)
	}
	return g, nil
}

func hashBytes(b []byte) uint64 {
	var h uint64
	for _, c := range b {
		h = h*hashMul + uint64(c)
	}
	return h
}

// mix spreads a window hash over the table's slots and the check bits.
func mix(h uint64) uint64 { h ^= h >> 29; h *= 0xbf58476d1ce4e5b9; h ^= h >> 32; return h }

// index hashes the source's window at every step bytes. A later window replaces an earlier one
// in its slot, so memory is fixed; a lost window costs at most a match found a step later.
func (g *gen) index(ctx context.Context) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off+hashWindow <= g.oldLen; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := g.old.ReadAt(buf, off)
		if n < len(buf) && err != io.EOF && err != nil {
			return fmt.Errorf("read source: %w", err)
		}
		b := buf[:n]
		var i int64
		for ; i+hashWindow <= int64(len(b)); i += g.step {
			m := mix(hashBytes(b[i : i+hashWindow]))
			s := m & g.mask
			g.pos[s], g.check[s] = uint32((off+i)/g.step)+1, uint32(m>>32)
		}
		if n < len(buf) {
			break
		}
		off += i
	}
	return nil
}

// srcCache reads the source through a 1 MiB window.
type srcCache struct {
	r    io.ReaderAt
	n    int64
	base int64
	buf  []byte
}

func (s *srcCache) at(p int64) (byte, bool) {
	if p < 0 || p >= s.n {
		return 0, false
	}
	if p < s.base || p >= s.base+int64(len(s.buf)) {
		s.base = max(0, p-int64(cap(s.buf))/4)
		k, _ := s.r.ReadAt(s.buf[:min(int64(cap(s.buf)), s.n-s.base)], s.base)
		s.buf = s.buf[:k]
		if p >= s.base+int64(k) {
			return 0, false
		}
	}
	return s.buf[p-s.base], true
}

// tbuf is the destination's unemitted bytes and a read-ahead.
type tbuf struct {
	r    *bufio.Reader
	data []byte
	base int64 // destination offset of data[0]
	eof  bool
}

// fill makes bytes up to end (exclusive) available if the destination has them.
func (t *tbuf) fill(end int64) {
	for !t.eof && t.base+int64(len(t.data)) < end {
		var b [64 << 10]byte
		n, err := t.r.Read(b[:])
		t.data = append(t.data, b[:n]...)
		if err != nil {
			t.eof = true
		}
	}
}

func (t *tbuf) end() int64 { return t.base + int64(len(t.data)) }

func (t *tbuf) at(p int64) byte { return t.data[p-t.base] }

// drop forgets bytes before p.
func (t *tbuf) drop(p int64) {
	if p-t.base > 4<<20 {
		n := copy(t.data, t.data[p-t.base:])
		t.data = t.data[:n]
		t.base = p
	}
}

func (g *gen) scan(ctx context.Context, r *bufio.Reader, destLen int64) error {
	t := &tbuf{r: r}
	emit := int64(0) // destination bytes before emit are in records
	pos := int64(0)
	var h uint64
	hashAt := func(p int64) uint64 {
		t.fill(p + hashWindow)
		return hashBytes(t.data[p-t.base : p-t.base+hashWindow])
	}
	t.fill(hashWindow)
	if t.end() >= hashWindow {
		h = hashAt(0)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		t.fill(pos + hashWindow + 1)
		if pos+hashWindow > t.end() {
			break
		}
		if ts, ss, n, ok := g.match(t, h, pos, emit); ok {
			if err := g.record(t, emit, ts, ss, n); err != nil {
				return err
			}
			emit, pos = ts+n, ts+n
			t.drop(emit)
			t.fill(pos + hashWindow)
			if pos+hashWindow <= t.end() {
				h = hashAt(pos)
			}
			continue
		}
		if pos-emit >= SegmentOut { // a long run of new bytes: emit it and let the buffer go
			if err := g.record(t, emit, pos, 0, 0); err != nil {
				return err
			}
			emit = pos
			t.drop(emit)
		}
		if pos+hashWindow >= t.end() {
			pos++
			continue
		}
		out, in := t.at(pos), t.at(pos+hashWindow)
		h = (h-uint64(out)*uint64(g.pw))*hashMul + uint64(in)
		pos++
	}
	t.fill(destLen + 1)
	if t.end() != destLen {
		return fmt.Errorf("destination has %d bytes, expected %d", t.end(), destLen)
	}
	if err := g.record(t, emit, destLen, 0, 0); err != nil {
		return err
	}
	return g.flush()
}

// match looks the window at pos up in the source index; on a hit it extends the match backward
// into the unemitted bytes and forward, exactly and then fuzzily (bsdiff's diff regions). It
// returns where the match starts in the destination and in the source, and its length.
func (g *gen) match(t *tbuf, h uint64, pos, emit int64) (ts, ss, n int64, ok bool) {
	m := mix(h)
	s := m & g.mask
	if g.pos[s] == 0 || g.check[s] != uint32(m>>32) {
		return 0, 0, 0, false
	}
	sp := int64(g.pos[s]-1) * g.step
	for i := int64(0); i < hashWindow; i++ {
		b, ok := g.src.at(sp + i)
		if !ok || b != t.at(pos+i) {
			return 0, 0, 0, false
		}
	}
	ts, ss = pos, sp
	for ts > emit && ss > 0 {
		b, _ := g.src.at(ss - 1)
		if b != t.at(ts-1) {
			break
		}
		ts, ss = ts-1, ss-1
	}
	// forward: exact, then fuzzy while matches outnumber mismatches
	end := pos + hashWindow
	score, best, bestEnd := 0, 0, end
	for {
		if end >= t.end() {
			t.fill(end + 1<<20)
			if end >= t.end() {
				break
			}
		}
		b, ok := g.src.at(ss + (end - ts))
		if !ok {
			break
		}
		if b == t.at(end) {
			score++
		} else {
			score--
		}
		end++
		if score >= best {
			best, bestEnd = score, end
		}
		if end-bestEnd > fuzzSlack || end-ts >= maxMatch {
			break
		}
	}
	return ts, ss, bestEnd - ts, true
}

// record emits destination bytes [emit, ts) as new bytes, then n bytes from source ss as a diff
// region, splitting at segment boundaries.
func (g *gen) record(t *tbuf, emit, ts, ss, n int64) error {
	for emit < ts || n > 0 {
		room := SegmentOut - g.segOut
		extra := min(ts-emit, room)
		d := int64(0)
		if emit+extra == ts {
			d = min(n, room-extra)
		}
		g.recs = binary.AppendUvarint(g.recs, uint64(extra))
		g.recs = binary.AppendUvarint(g.recs, uint64(d))
		if d > 0 {
			g.recs = binary.AppendVarint(g.recs, ss-g.lastSrc)
			g.lastSrc = ss + d
		} else {
			g.recs = binary.AppendVarint(g.recs, 0)
		}
		g.lits = append(g.lits, t.data[emit-t.base:emit-t.base+extra]...)
		for i := range d {
			b, _ := g.src.at(ss + i)
			g.diffs = append(g.diffs, t.at(ts+i)-b)
		}
		g.stats.Literal += extra
		g.stats.Copied += d
		g.segOut += extra + d
		emit += extra
		if d > 0 {
			ts, ss, n = ts+d, ss+d, n-d
			emit = ts
		}
		if g.segOut == SegmentOut {
			if err := g.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (g *gen) flush() error {
	if g.segOut == 0 {
		return nil
	}
	g.runs, g.vals = splitDiffs(g.runs[:0], g.vals[:0], g.diffs)
	raw := binary.AppendUvarint(g.raw[:0], uint64(len(g.recs)))
	raw = binary.AppendUvarint(raw, uint64(len(g.lits)))
	raw = binary.AppendUvarint(raw, uint64(len(g.runs)))
	raw = append(append(append(append(raw, g.recs...), g.lits...), g.runs...), g.vals...)
	g.raw = raw
	g.comp.Reset()
	if err := compressSegment(&g.comp, raw); err != nil {
		return err
	}
	comp := g.comp.Bytes()
	var sh [segHeader]byte
	binary.LittleEndian.PutUint32(sh[:], uint32(len(comp)))
	binary.LittleEndian.PutUint32(sh[4:], uint32(len(raw)))
	binary.LittleEndian.PutUint32(sh[8:], uint32(g.segOut))
	binary.LittleEndian.PutUint32(sh[12:], crc32.Checksum(raw, crcTable))
	g.out.Write(sh[:]) //nolint:errcheck // bufio: Flush reports
	if _, err := g.out.Write(comp); err != nil {
		return err
	}
	g.stats.PatchLength += int64(segHeader + len(comp))
	g.stats.Segments++
	g.done += g.segOut
	if g.progress != nil {
		g.progress(g.done)
	}
	g.recs, g.lits, g.diffs, g.segOut, g.lastSrc = g.recs[:0], g.lits[:0], g.diffs[:0], 0, 0
	return nil
}
