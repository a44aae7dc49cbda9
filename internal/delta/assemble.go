package delta

import (
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
)

// ErrChunk is wrapped by the error for a chunk whose bytes do not have the id the signed index
// names: tampered or corrupt in transit.
var ErrChunk = errors.New("chunk does not match its id")

// ChunkState is where a resumable assembly stands: the next chunk of the destination index, the
// output offset (its start) and the bytes downloaded so far.
type ChunkState struct {
	Next       int   `json:"next"`
	OutOff     int64 `json:"out_off"`
	Downloaded int64 `json:"downloaded"`
	Reused     int64 `json:"reused"`
}

// Fetch returns the bytes [off, off+n) of the destination image (an HTTP Range request).
type Fetch func(ctx context.Context, off, n int64) (io.ReadCloser, error)

// maxRun bounds the bytes of one request for missing chunks.
const maxRun = 4 << 20

// Assembler rebuilds an image from a chunk index: chunks found in the active image (by the
// source index) are read from it and checked against their ids, the others are fetched from the
// destination image, a run of neighbouring missing chunks per request, and checked too. Memory:
// one chunk buffer and a map of the source index's ids (about 60 bytes a chunk).
type Assembler struct {
	Dst, Src *Index
	Active   io.ReaderAt // the running image, which Src indexes; nil: download everything
	// CkptEvery is how many output bytes pass between checkpoints (default 4 MiB).
	CkptEvery int64
	have      map[ChunkID]Chunk
	buf       []byte
}

// NeedBytes is how many bytes of the destination are not in the source, by their ids: what
// Assemble downloads if the active image matches its index.
func (a *Assembler) NeedBytes() int64 {
	a.init()
	var n int64
	for _, c := range a.Dst.Chunks {
		if _, ok := a.have[c.ID]; !ok {
			n += int64(c.Size)
		}
	}
	return n
}

func (a *Assembler) init() {
	if a.have != nil {
		return
	}
	a.have = map[ChunkID]Chunk{}
	if a.Src != nil && a.Active != nil {
		for _, c := range a.Src.Chunks {
			if _, ok := a.have[c.ID]; !ok {
				a.have[c.ID] = c
			}
		}
	}
	a.buf = make([]byte, a.Dst.Max)
}

// Assemble writes the destination from st.OutOff (out is positioned there) and calls ckpt, if
// set, every CkptEvery bytes at a chunk boundary. A chunk with the wrong bytes from fetch is an
// error wrapping ErrChunk; fetch's own errors are returned as they are.
func (a *Assembler) Assemble(ctx context.Context, fetch Fetch, out io.Writer, st ChunkState, ckpt func(ChunkState) error) (ChunkState, error) {
	a.init()
	every := a.CkptEvery
	if every <= 0 {
		every = 4 << 20
	}
	next := st.OutOff + every
	for st.Next < len(a.Dst.Chunks) {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		c := a.Dst.Chunks[st.Next]
		if int64(c.Start) != st.OutOff {
			return st, fmt.Errorf("chunk %d starts at %d, output is at %d", st.Next, c.Start, st.OutOff)
		}
		if s, ok := a.have[c.ID]; ok {
			b := a.buf[:c.Size]
			if _, err := a.Active.ReadAt(b, int64(s.Start)); err == nil && sha512.Sum512_256(b) == c.ID {
				if _, err := out.Write(b); err != nil {
					return st, fmt.Errorf("write image: %w", err)
				}
				st.Next++
				st.OutOff += int64(c.Size)
				st.Reused += int64(c.Size)
			} else {
				delete(a.have, c.ID) // the active image differs from its index here: fetch it
				continue
			}
		} else {
			// a run of missing chunks, one request
			end := st.Next
			var n int64
			for end < len(a.Dst.Chunks) && n < maxRun {
				if _, ok := a.have[a.Dst.Chunks[end].ID]; ok {
					break
				}
				n += int64(a.Dst.Chunks[end].Size)
				end++
			}
			r, err := fetch(ctx, int64(c.Start), n)
			if err != nil {
				return st, err
			}
			for st.Next < end {
				c := a.Dst.Chunks[st.Next]
				b := a.buf[:c.Size]
				if _, err := io.ReadFull(r, b); err != nil {
					r.Close()
					return st, fmt.Errorf("chunk %d: %w", st.Next, err)
				}
				if sha512.Sum512_256(b) != c.ID {
					r.Close()
					return st, fmt.Errorf("%w: chunk %d at byte %d", ErrChunk, st.Next, c.Start)
				}
				if _, err := out.Write(b); err != nil {
					r.Close()
					return st, fmt.Errorf("write image: %w", err)
				}
				st.Next++
				st.OutOff += int64(c.Size)
				st.Downloaded += int64(c.Size)
				if ckpt != nil && st.OutOff >= next {
					if err := ckpt(st); err != nil {
						r.Close()
						return st, err
					}
					next = st.OutOff + every
				}
			}
			r.Close()
			continue
		}
		if ckpt != nil && st.OutOff >= next {
			if err := ckpt(st); err != nil {
				return st, err
			}
			next = st.OutOff + every
		}
	}
	return st, nil
}
