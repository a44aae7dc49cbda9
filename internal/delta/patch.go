package delta

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// The per-pair form: a bsdiff-style binary delta from one source image to one destination,
// made for memory-bounded streaming on both ends.
//
// Like bsdiff, the destination is a sequence of records, each "extra" bytes (new, stored
// literally) followed by a "diff" region: source bytes at a position, plus a bytewise difference
// that is mostly zeros (changed addresses in code moved by a few bytes), which compresses to
// almost nothing. Unlike bsdiff (a suffix array of the whole source when generating, 17 times
// its size; source and destination both in memory when applying), matches are found through a
// sampled hash index of the source (a bounded table, the source itself read from disk), and the
// records are cut into segments of at most SegmentOut bytes of output, each an independent zstd
// frame. A device applies a segment at a time with a few MiB of memory, and a power cut loses at
// most a segment: the journal records where the last complete segment ended in the patch and in
// the output.
//
// File layout (little endian):
//
//	"UPKDLT1\n" | u64 source length | u64 destination length |
//	segments: u32 compressed length | u32 raw length | u32 output length | zstd frame
//
// A segment's raw bytes: uvarint len(records) | uvarint len(extra) | records | extra | diff,
// records being (uvarint extra, uvarint diff, varint source position minus the previous
// record's source end).

const patchMagic = "UPKDLT1\n"

// HeaderSize is the length of a patch's header; the first segment starts there.
const HeaderSize = len(patchMagic) + 16

// SegmentOut is the most output one segment produces.
const SegmentOut = 2 << 20

// maxRaw bounds a segment's decompressed size: its output plus its records.
const maxRaw = SegmentOut + 1<<20

// Format names, as they appear in a delta target's custom.
const (
	FormatPatch = "upkdlt1" // this package's per-pair delta
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
		return Header{}, corrupt("not an upkdlt1 patch")
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

// Applier applies patches with bounded memory (a decoder, one segment, one copy buffer: about
// 5 MiB). It is not safe for concurrent use; reuse it for several patches.
type Applier struct {
	dec  *zstd.Decoder
	raw  []byte
	copy []byte
}

// NewApplier returns an Applier.
func NewApplier() (*Applier, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderMaxMemory(maxRaw))
	if err != nil {
		return nil, err
	}
	return &Applier{dec: dec, copy: make([]byte, 128<<10)}, nil
}

// Close releases the decoder.
func (a *Applier) Close() { a.dec.Close() }

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
	var sh [12]byte
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
			a.raw = make([]byte, rlen, maxRaw)
		}
		raw := a.raw[:rlen]
		lr := &io.LimitedReader{R: patch, N: clen}
		if err := a.dec.Reset(lr); err != nil {
			return st, err
		}
		if _, err := io.ReadFull(a.dec, raw); err != nil {
			if lr.N == 0 || !isNetErr(err) {
				return st, corrupt("segment at %d: %v", st.PatchOff, err)
			}
			return st, fmt.Errorf("read segment at %d: %w", st.PatchOff, err)
		}
		if _, err := io.Copy(io.Discard, lr); err != nil { // the frame's checksum and any padding
			return st, fmt.Errorf("read segment at %d: %w", st.PatchOff, err)
		}
		if lr.N != 0 {
			return st, fmt.Errorf("read segment at %d: %w", st.PatchOff, io.ErrUnexpectedEOF)
		}
		if err := a.segment(old, oldLen, raw, olen, out); err != nil {
			return st, err
		}
		st.PatchOff += 12 + clen
		st.OutOff += olen
		if ckpt != nil {
			if err := ckpt(st); err != nil {
				return st, err
			}
		}
	}
	return st, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// isNetErr reports whether a decoder error came from the reader below rather than the frame.
func isNetErr(err error) bool {
	return !errors.Is(err, zstd.ErrMagicMismatch) && !errors.Is(err, zstd.ErrCRCMismatch) &&
		!errors.Is(err, zstd.ErrBlockTooSmall) && !errors.Is(err, zstd.ErrWindowSizeExceeded) &&
		!errors.Is(err, zstd.ErrDecoderSizeExceeded) && !errors.Is(err, zstd.ErrReservedBlockType) &&
		!errors.Is(err, zstd.ErrCompressedSizeTooBig) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF)
}

func (a *Applier) segment(old io.ReaderAt, oldLen int64, raw []byte, olen int64, out io.Writer) error {
	r := bytes.NewReader(raw)
	nrec, err1 := binary.ReadUvarint(r)
	nlit, err2 := binary.ReadUvarint(r)
	hdr := int64(len(raw)) - int64(r.Len())
	if err1 != nil || err2 != nil || nrec > uint64(len(raw)) || nlit > uint64(len(raw)) || hdr+int64(nrec)+int64(nlit) > int64(len(raw)) {
		return corrupt("segment layout")
	}
	recs := bytes.NewReader(raw[hdr : hdr+int64(nrec)])
	lits := raw[hdr+int64(nrec) : hdr+int64(nrec)+int64(nlit)]
	diffs := raw[hdr+int64(nrec)+int64(nlit):]
	var src, written int64
	for recs.Len() > 0 {
		extra, err1 := binary.ReadUvarint(recs)
		diff, err2 := binary.ReadUvarint(recs)
		seek, err3 := binary.ReadVarint(recs)
		if err1 != nil || err2 != nil || err3 != nil {
			return corrupt("record")
		}
		if extra > uint64(len(lits)) || diff > uint64(len(diffs)) || written+int64(extra)+int64(diff) > olen {
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
			for i := range b {
				b[i] += diffs[i]
			}
			if _, err := out.Write(b); err != nil {
				return fmt.Errorf("write image: %w", err)
			}
			diffs = diffs[len(b):]
			src += int64(len(b))
			d -= int64(len(b))
		}
		written += int64(extra) + int64(diff)
	}
	if written != olen || len(lits) != 0 || len(diffs) != 0 {
		return corrupt("segment yields %d bytes, states %d", written, olen)
	}
	return nil
}
