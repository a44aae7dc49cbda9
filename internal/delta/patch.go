package delta

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The per-pair form: a bsdiff-style binary delta from one source image to one destination,
// made for memory-bounded streaming on both ends.
//
// Like bsdiff, the destination is a sequence of records, each "extra" bytes (new, stored
// literally) followed by a "diff" region: source bytes at a position, plus a bytewise difference
// that is mostly zeros (changed addresses in code moved by a few bytes). Unlike bsdiff (a suffix
// array of the whole source when generating, 17 times its size; source and destination both in
// memory when applying), matches are found through a bounded index of the source (whole.go for
// images up to WholeMax, a sampled hash index above), and the records are cut into segments of at
// most SegmentOut bytes of output, each compressed on its own. A device applies a segment at a
// time with a few MiB of memory, and a power cut loses at most a segment: the journal records
// where the last complete segment ended in the patch and in the output.
//
// The diff regions are stored split, as runs of zero and non-zero bytes (uvarint lengths,
// alternating, starting with zeros) and the non-zero values, and each segment is one LZMA2
// stream (ulikunitz/xz, 1 MiB dictionary). Chosen by measurement (docs/DECISIONS.md): on the
// benchmark's pairs this is 15% smaller than upkdlt1 (the unsplit stream in a zstd frame at its
// best level) and smaller than Debian's bsdiff, whose bzip2 codes its diff stream better than
// zstd did.
//
// File layout (little endian):
//
//	"UPKDLT2\n" | u64 source length | u64 destination length |
//	segments: u32 compressed length | u32 raw length | u32 output length | u32 CRC-32C of raw |
//	          LZMA2 stream
//
// A segment's raw bytes: uvarint len(records) | uvarint len(extra) | uvarint len(runs) |
// records | extra | runs | values, records being (uvarint extra, uvarint diff, varint source
// position minus the previous record's source end).

const patchMagic = "UPKDLT2\n"

// HeaderSize is the length of a patch's header; the first segment starts there.
const HeaderSize = len(patchMagic) + 16

// SegmentOut is the most output one segment produces.
const SegmentOut = 2 << 20

// maxRaw bounds a segment's decompressed size: its records (under 1 MiB: a record covers at
// least a match's length), and at most twice its output (extra bytes, runs and values: a run
// pair takes at most as many bytes as the output it covers).
const maxRaw = 2*SegmentOut + 1<<20

// segHeader is a segment's header length.
const segHeader = 16

// dictCap is the LZMA2 dictionary of a segment, on both ends: a segment's raw bytes are mostly
// far below a MiB once the zero runs are out, and a larger dictionary made no patch smaller.
const dictCap = 1 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Format names, as they appear in a delta target's custom.
const (
	FormatPatch = "upkdlt2" // this package's per-pair delta
	FormatCaibx = "caibx"   // casync chunk index
)

// ErrCorrupt is wrapped by every error about malformed patch bytes.
var ErrCorrupt = errors.New("corrupt delta")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Header is what a patch says about its images (trust comes from the signed target's custom,
// not from here).
type Header struct{ SourceLength, DestLength int64 }

// ReadHeader reads a patch's header.
func ReadHeader(r io.Reader) (Header, error) {
	var b [HeaderSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Header{}, corrupt("header: %v", err)
	}
	if string(b[:8]) != patchMagic {
		return Header{}, corrupt("not an %s patch", FormatPatch)
	}
	h := Header{int64(binary.LittleEndian.Uint64(b[8:])), int64(binary.LittleEndian.Uint64(b[16:]))}
	if h.SourceLength < 0 || h.DestLength < 0 {
		return Header{}, corrupt("negative length")
	}
	return h, nil
}

// ApplyState is where a resumable apply stands: the patch and output offsets just after the
// last complete segment. The zero value starts at the beginning (the header is read).
type ApplyState struct {
	PatchOff int64 `json:"patch_off"`
	OutOff   int64 `json:"out_off"`
}

// Applier applies patches with bounded memory (one segment's raw bytes, the LZMA2 decoder's
// dictionary, one copy buffer: about 4 MiB). It is not safe for concurrent use; reuse it for
// several patches.
type Applier struct {
	raw  []byte
	copy []byte
}

// NewApplier returns an Applier.
func NewApplier() (*Applier, error) {
	return &Applier{copy: make([]byte, 128<<10)}, nil
}

// Close releases the Applier's buffers.
func (a *Applier) Close() { a.raw, a.copy = nil, nil }

// Apply reads patch from st.PatchOff (the caller positions it there: a Range request, a seek)
// and writes the destination from st.OutOff to out, reading the source from old (oldLen bytes:
// the active slot). After each segment it calls ckpt, if set, with the new state; ckpt makes
// the output durable and journals the state. It stops at the destination length the header
// states (destLen, known to the caller from the signed image target, must agree) and fails on
// anything malformed with an error wrapping ErrCorrupt. Reads of patch that fail are returned
// as they are (the caller tells network trouble from the rest).
func (a *Applier) Apply(ctx context.Context, old io.ReaderAt, oldLen, destLen int64, patch io.Reader, out io.Writer, st ApplyState, ckpt func(ApplyState) error) (ApplyState, error) {
	if st.PatchOff == 0 {
		h, err := ReadHeader(patch)
		if err != nil {
			return st, err
		}
		if h.SourceLength != oldLen || h.DestLength != destLen {
			return st, corrupt("patch is for %d → %d bytes, expected %d → %d", h.SourceLength, h.DestLength, oldLen, destLen)
		}
		st = ApplyState{PatchOff: int64(HeaderSize)}
	}
	var sh [segHeader]byte
	for st.OutOff < destLen {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if _, err := io.ReadFull(patch, sh[:]); err != nil {
			return st, fmt.Errorf("read segment header at %d: %w", st.PatchOff, noEOF(err))
		}
		clen, rlen, olen := int64(binary.LittleEndian.Uint32(sh[:])), int64(binary.LittleEndian.Uint32(sh[4:])), int64(binary.LittleEndian.Uint32(sh[8:]))
		if rlen > maxRaw || olen > SegmentOut || olen == 0 || st.OutOff+olen > destLen {
			return st, corrupt("segment at %d: raw %d, output %d (at %d of %d)", st.PatchOff, rlen, olen, st.OutOff, destLen)
		}
		if cap(a.raw) < int(rlen) {
			a.raw = make([]byte, rlen)
		}
		raw := a.raw[:rlen]
		src := &readErr{r: &io.LimitedReader{R: patch, N: clen}}
		if err := readSegment(src, raw); err != nil {
			if src.err != nil { // the patch's reader failed: the network, the disk
				return st, fmt.Errorf("read segment at %d: %w", st.PatchOff, src.err)
			}
			return st, corrupt("segment at %d: %v", st.PatchOff, err)
		}
		if crc32.Checksum(raw, crcTable) != binary.LittleEndian.Uint32(sh[12:]) {
			return st, corrupt("segment at %d: checksum mismatch", st.PatchOff)
		}
		if err := a.segment(old, oldLen, raw, olen, out); err != nil {
			return st, err
		}
		st.PatchOff += segHeader + clen
		st.OutOff += olen
		if ckpt != nil {
			if err := ckpt(st); err != nil {
				return st, err
			}
		}
	}
	return st, nil
}

// readSegment decompresses one segment's LZMA2 stream from src (limited to its compressed
// length) into raw, which must be exactly filled: the stream ends there, and so do its bytes.
func readSegment(src *readErr, raw []byte) error {
	dec, err := lzma.Reader2Config{DictCap: dictCap}.NewReader2(src)
	if err != nil {
		return err
	}
	if _, err := io.ReadFull(dec, raw); err != nil {
		return err
	}
	var one [1]byte
	if n, err := dec.Read(one[:]); n != 0 || (err != io.EOF && err != nil) || !dec.EOS() {
		return fmt.Errorf("more than the %d raw bytes the header states", len(raw))
	}
	if n, err := io.Copy(io.Discard, src); err != nil || n != 0 {
		return fmt.Errorf("%d bytes after the stream's end", n)
	}
	return nil
}

// readErr remembers its reader's failure, to tell a patch that could not be read (retry, resume)
// from one that was read and is malformed.
type readErr struct {
	r   *io.LimitedReader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	} else if err == io.EOF && e.r.N > 0 {
		e.err = io.ErrUnexpectedEOF // the patch ended inside the segment
	}
	return n, err
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (a *Applier) segment(old io.ReaderAt, oldLen int64, raw []byte, olen int64, out io.Writer) error {
	r := bytes.NewReader(raw)
	nrec, err1 := binary.ReadUvarint(r)
	nlit, err2 := binary.ReadUvarint(r)
	nrun, err3 := binary.ReadUvarint(r)
	hdr := uint64(len(raw) - r.Len())
	if err1 != nil || err2 != nil || err3 != nil || nrec > uint64(len(raw)) || nlit > uint64(len(raw)) || nrun > uint64(len(raw)) || hdr+nrec+nlit+nrun > uint64(len(raw)) {
		return corrupt("segment layout")
	}
	recs := bytes.NewReader(raw[hdr : hdr+nrec])
	lits := raw[hdr+nrec : hdr+nrec+nlit]
	diffs := diffStream{runs: raw[hdr+nrec+nlit : hdr+nrec+nlit+nrun], vals: raw[hdr+nrec+nlit+nrun:]}
	var src, written int64
	for recs.Len() > 0 {
		extra, err1 := binary.ReadUvarint(recs)
		diff, err2 := binary.ReadUvarint(recs)
		seek, err3 := binary.ReadVarint(recs)
		if err1 != nil || err2 != nil || err3 != nil {
			return corrupt("record")
		}
		if extra > uint64(len(lits)) || diff > uint64(olen) || written+int64(extra)+int64(diff) > olen {
			return corrupt("record of %d+%d bytes overruns its segment", extra, diff)
		}
		if _, err := out.Write(lits[:extra]); err != nil {
			return fmt.Errorf("write image: %w", err)
		}
		lits = lits[extra:]
		src += seek
		if src < 0 || src+int64(diff) > oldLen {
			return corrupt("record reads source bytes %d+%d of %d", src, diff, oldLen)
		}
		for d := int64(diff); d > 0; {
			b := a.copy[:min(d, int64(len(a.copy)))]
			if _, err := old.ReadAt(b, src); err != nil {
				return fmt.Errorf("read active image at %d: %w", src, err)
			}
			if err := diffs.add(b); err != nil {
				return err
			}
			if _, err := out.Write(b); err != nil {
				return fmt.Errorf("write image: %w", err)
			}
			src += int64(len(b))
			d -= int64(len(b))
		}
		written += int64(extra) + int64(diff)
	}
	if written != olen || len(lits) != 0 || !diffs.done() {
		return corrupt("segment yields %d bytes, states %d", written, olen)
	}
	return nil
}

// diffStream reads the split diff regions: alternating runs of zero and non-zero differences
// (uvarint lengths, zeros first) and the non-zero values in order.
type diffStream struct {
	runs, vals  []byte
	zero, value uint64 // what remains of the current runs
}

// add adds the next len(b) differences to b.
func (d *diffStream) add(b []byte) error {
	for len(b) > 0 {
		if d.zero == 0 && d.value == 0 {
			z, n1 := binary.Uvarint(d.runs)
			if n1 <= 0 {
				return corrupt("diff runs end early")
			}
			v, n2 := binary.Uvarint(d.runs[n1:])
			if n2 <= 0 || z+v == 0 || v > uint64(len(d.vals)) {
				return corrupt("diff run")
			}
			d.runs, d.zero, d.value = d.runs[n1+n2:], z, v
		}
		k := min(d.zero, uint64(len(b)))
		b, d.zero = b[k:], d.zero-k
		k = min(d.value, uint64(len(b)))
		for i, v := range d.vals[:k] {
			b[i] += v
		}
		b, d.vals, d.value = b[k:], d.vals[k:], d.value-k
	}
	return nil
}

func (d *diffStream) done() bool {
	return len(d.runs) == 0 && len(d.vals) == 0 && d.zero == 0 && d.value == 0
}

// splitDiffs appends diffs split into runs (alternating zero and non-zero run lengths) and the
// non-zero values: the form diffStream reads.
func splitDiffs(runs, vals, diffs []byte) ([]byte, []byte) {
	for i := 0; i < len(diffs); {
		z := i
		for i < len(diffs) && diffs[i] == 0 {
			i++
		}
		v := i
		for i < len(diffs) && diffs[i] != 0 {
			i++
		}
		runs = binary.AppendUvarint(binary.AppendUvarint(runs, uint64(v-z)), uint64(i-v))
		vals = append(vals, diffs[v:i]...)
	}
	return runs, vals
}

// compressSegment writes raw as one LZMA2 stream.
func compressSegment(w io.Writer, raw []byte) error {
	enc, err := lzma.Writer2Config{DictCap: dictCap}.NewWriter2(w)
	if err != nil {
		return err
	}
	if _, err := enc.Write(raw); err != nil {
		return err
	}
	return enc.Close()
}
