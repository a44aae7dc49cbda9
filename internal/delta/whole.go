package delta

import (
	"context"
	"fmt"
	"io"
	"math/bits"
)

// Small images are matched bsdiff's way, over the whole of both images in memory, which gives
// patches about 40% smaller than the sampled index on a recompiled library (its code moves by a
// few bytes everywhere, so the matches worth keeping are short): the scan keeps the current
// alignment of source and destination for as long as it matches about as well as the best new
// match would, extends each alignment fuzzily forwards and backwards, and splits overlaps where
// the two alignments score the same. The scan follows bsdiff 4.3's (Colin Percival's paper
// "Naïve differences of executable code"); the longest-match search is a hash chain over every
// source position, with a bounded number of candidates, instead of bsdiff's suffix array (17
// times the source's size in memory). No maintained Go package makes a streaming-applicable
// patch this way: gabstv/go-bsdiff writes bsdiff's own format, whose application needs both
// images in memory on the device. The records it produces are the same records as the
// sampled path's, so the device applies both alike.

// WholeMax is the largest source and destination matched over the whole of both: memory is
// about 6 bytes per source byte plus both images, 134 MiB at WholeMax.
const WholeMax = 16 << 20

const (
	chainKey   = 6       // bytes hashed for a chain
	chainBits  = 20      // chain heads at most (fewer for a smaller source)
	chainDepth = 48      // candidates tried per search
	chainLong  = 1 << 12 // a match this long ends the search
	// a new alignment replaces the current one when it matches this many more bytes (bsdiff's 8)
	switchGain = 8
)

// chains finds long matches of the destination in the source.
type chains struct {
	old  []byte
	bits int
	head []int32 // hash -> last source position + 1
	prev []int32 // source position -> previous position with the same hash + 1
}

func newChains(old []byte) *chains {
	b := min(max(bits.Len(uint(len(old))), 8), chainBits)
	c := &chains{old: old, bits: b, head: make([]int32, 1<<b), prev: make([]int32, len(old))}
	for i := 0; i+chainKey <= len(old); i++ {
		h := c.hash(old[i:])
		c.prev[i] = c.head[h]
		c.head[h] = int32(i) + 1
	}
	return c
}

func (c *chains) hash(b []byte) uint32 {
	var h uint64
	for _, x := range b[:chainKey] {
		h = h*hashMul + uint64(x)
	}
	return uint32(mix(h) >> (64 - c.bits))
}

// search returns the longest match of nw found in the source, and where it starts there.
func (c *chains) search(nw []byte) (n, pos int) {
	if len(nw) < chainKey {
		return 0, 0
	}
	limit := min(len(nw), maxMatch)
	for cand, tries := c.head[c.hash(nw)], 0; cand != 0 && tries < chainDepth; cand, tries = c.prev[cand-1], tries+1 {
		p := int(cand - 1)
		k := 0
		for k < limit && p+k < len(c.old) && c.old[p+k] == nw[k] {
			k++
		}
		if k > n {
			n, pos = k, p
			if k >= chainLong || k == limit {
				break
			}
		}
	}
	return n, pos
}

// generateWhole writes the records of old -> nw (both in memory) through g.record.
func (g *gen) generateWhole(ctx context.Context, old, nw []byte) error {
	c := newChains(old)
	t := &tbuf{data: nw, eof: true}
	g.src = srcCache{n: int64(len(old)), buf: old}
	oldLen, newLen := len(old), len(nw)
	emit := 0 // destination bytes already in records
	scan, n, pos := 0, 0, 0
	lastScan, lastPos, lastOffset := 0, 0, 0
	for scan < newLen {
		if err := ctx.Err(); err != nil {
			return err
		}
		oldScore := 0
		scan += n
		for scsc := scan; scan < newLen; scan++ {
			n, pos = c.search(nw[scan:])
			for ; scsc < scan+n; scsc++ {
				if scsc+lastOffset >= 0 && scsc+lastOffset < oldLen && old[scsc+lastOffset] == nw[scsc] {
					oldScore++
				}
			}
			if (n == oldScore && n != 0) || n > oldScore+switchGain {
				break
			}
			if scan+lastOffset >= 0 && scan+lastOffset < oldLen && old[scan+lastOffset] == nw[scan] {
				oldScore--
			}
		}
		if n == oldScore && scan != newLen {
			continue
		}
		// The current alignment extended forwards from lastScan, the new one backwards from scan.
		lenF, s, best := 0, 0, 0
		for i := 0; lastScan+i < scan && lastPos+i < oldLen; {
			if old[lastPos+i] == nw[lastScan+i] {
				s++
			}
			i++
			if s*2-i > best*2-lenF {
				best, lenF = s, i
			}
		}
		lenB := 0
		if scan < newLen {
			s, best = 0, 0
			for i := 1; scan >= lastScan+i && pos >= i; i++ {
				if old[pos-i] == nw[scan-i] {
					s++
				}
				if s*2-i > best*2-lenB {
					best, lenB = s, i
				}
			}
		}
		if lastScan+lenF > scan-lenB { // the two overlap: split where the score is best
			overlap := lastScan + lenF - (scan - lenB)
			s, best, lenS := 0, 0, 0
			for i := range overlap {
				if nw[lastScan+lenF-overlap+i] == old[lastPos+lenF-overlap+i] {
					s++
				}
				if nw[scan-lenB+i] == old[pos-lenB+i] {
					s--
				}
				if s > best {
					best, lenS = s, i+1
				}
			}
			lenF += lenS - overlap
			lenB -= lenS
		}
		if lenF > 0 {
			if err := g.record(t, int64(emit), int64(lastScan), int64(lastPos), int64(lenF)); err != nil {
				return err
			}
			emit = lastScan + lenF
		}
		lastScan, lastPos, lastOffset = scan-lenB, pos-lenB, pos-scan
	}
	if err := g.record(t, int64(emit), int64(newLen), 0, 0); err != nil {
		return err
	}
	return g.flush()
}

// readAllBounded reads exactly n bytes of r.
func readAllBounded(r io.Reader, n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("destination shorter than %d bytes: %w", n, err)
	}
	var one [1]byte
	if k, _ := r.Read(one[:]); k != 0 {
		return nil, fmt.Errorf("destination longer than %d bytes", n)
	}
	return b, nil
}
