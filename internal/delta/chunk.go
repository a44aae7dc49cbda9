package delta

import (
	"bufio"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
)

// The chunked form: a casync-compatible content-defined chunk index (".caibx"). The format and
// the chunker are those of casync and of github.com/folbricht/desync v0.9.6, written here by hand
// rather than imported: desync is one package that links its S3, GCS and SFTP stores (minio,
// the Google Cloud SDK, gRPC), megabytes the device agent must not carry, while what the agent
// needs is a 100-line reader. Indexes made here are read by `desync` and `casync` and the other
// way round (TestIndexInteropCasync).

// casync format constants (casync src/caformat.h, desync const.go).
const (
	caFormatIndex           = 0x96824d9c7b129ff9
	caFormatTable           = 0xe75b9e112f17417d
	caFormatTableTailMarker = 0x4b4f050e5549ecd1
	caFormatSHA512256       = 0x2000000000000000
	caFormatExcludeNoDump   = 0x8000000000000000
)

// Chunk sizes: casync's defaults (desync ChunkSizeAvgDefault and friends).
const (
	ChunkAvg = 64 << 10
	ChunkMin = ChunkAvg / 4
	ChunkMax = ChunkAvg * 4
)

// MaxIndexChunks bounds the chunks an index may list, so that a device holds at most a few MiB
// of index (40 bytes a chunk; 4 GiB of image at the default average size is 65,536 chunks).
const MaxIndexChunks = 1 << 20

// ChunkID is a chunk's SHA-512/256, as casync names chunks.
type ChunkID [32]byte

// Chunk is one entry of an index: the chunk's bytes are image[Start:Start+Size].
type Chunk struct {
	ID          ChunkID
	Start, Size uint64
}

// Index is a parsed chunk index.
type Index struct {
	Min, Avg, Max uint64
	Chunks        []Chunk
}

// Length is the length of the indexed image.
func (x *Index) Length() int64 {
	if len(x.Chunks) == 0 {
		return 0
	}
	c := x.Chunks[len(x.Chunks)-1]
	return int64(c.Start + c.Size)
}

// ReadIndex parses a caibx index from untrusted bytes (they are checked against the signed
// target's length and hash before, but a parser must not trust that). Every chunk must lie
// inside imageLength and the chunks must cover it exactly, none larger than the index's maximum.
func ReadIndex(r io.Reader, imageLength int64) (*Index, error) {
	br := bufio.NewReader(r)
	var h [6]uint64
	if err := binary.Read(br, binary.LittleEndian, &h); err != nil {
		return nil, fmt.Errorf("chunk index header: %w", err)
	}
	if h[0] != 48 || h[1] != caFormatIndex {
		return nil, errors.New("chunk index: not a caibx index")
	}
	if h[2]&caFormatSHA512256 == 0 {
		return nil, errors.New("chunk index: chunk ids are not SHA-512/256")
	}
	x := &Index{Min: h[3], Avg: h[4], Max: h[5]}
	if x.Max == 0 || x.Max > 64<<20 || x.Min > x.Max {
		return nil, fmt.Errorf("chunk index: chunk sizes %d/%d/%d out of range", x.Min, x.Avg, x.Max)
	}
	var th [2]uint64
	if err := binary.Read(br, binary.LittleEndian, &th); err != nil {
		return nil, fmt.Errorf("chunk index table: %w", err)
	}
	if th[0] != math.MaxUint64 || th[1] != caFormatTable {
		return nil, errors.New("chunk index: no chunk table")
	}
	var last uint64
	var item [40]byte
	for {
		if _, err := io.ReadFull(br, item[:]); err != nil {
			return nil, fmt.Errorf("chunk index table: %w", err)
		}
		off := binary.LittleEndian.Uint64(item[:8])
		if off == 0 { // the tail: 0, 0, index offset, table size, marker
			if binary.LittleEndian.Uint64(item[8:16]) != 0 || binary.LittleEndian.Uint64(item[32:40]) != caFormatTableTailMarker {
				return nil, errors.New("chunk index: bad table tail")
			}
			break
		}
		if len(x.Chunks) >= MaxIndexChunks {
			return nil, fmt.Errorf("chunk index: more than %d chunks", MaxIndexChunks)
		}
		if off <= last || off-last > x.Max {
			return nil, fmt.Errorf("chunk index: chunk %d ends at %d after %d (max size %d)", len(x.Chunks), off, last, x.Max)
		}
		if off > uint64(imageLength) {
			return nil, fmt.Errorf("chunk index: chunk %d ends at byte %d, past the image's %d bytes", len(x.Chunks), off, imageLength)
		}
		var c Chunk
		copy(c.ID[:], item[8:40])
		c.Start, c.Size = last, off-last
		x.Chunks = append(x.Chunks, c)
		last = off
	}
	if int64(last) != imageLength {
		return nil, fmt.Errorf("chunk index covers %d bytes, the image has %d", last, imageLength)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, errors.New("chunk index: bytes after the table")
	}
	return x, nil
}

// WriteTo writes the index in the caibx format (desync Index.WriteTo).
func (x *Index) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	le := func(vs ...uint64) {
		for _, v := range vs {
			binary.Write(bw, binary.LittleEndian, v) //nolint:errcheck // bufio keeps the first error for Flush
		}
	}
	le(48, caFormatIndex, caFormatExcludeNoDump|caFormatSHA512256, x.Min, x.Avg, x.Max)
	le(math.MaxUint64, caFormatTable)
	for _, c := range x.Chunks {
		le(c.Start + c.Size)
		bw.Write(c.ID[:]) //nolint:errcheck
	}
	table := uint64(16 + 40*len(x.Chunks))
	le(0, 0, 48, table+40, caFormatTableTailMarker)
	n := int64(48 + table + 40)
	return n, bw.Flush()
}

// MakeIndex chunks r with casync's rolling hash and default sizes and returns its index.
func MakeIndex(r io.Reader) (*Index, error) {
	x := &Index{Min: ChunkMin, Avg: ChunkAvg, Max: ChunkMax}
	c := newChunker(r, ChunkMin, ChunkAvg, ChunkMax)
	for {
		start, b, err := c.next()
		if err != nil {
			return nil, err
		}
		if len(b) == 0 {
			return x, nil
		}
		x.Chunks = append(x.Chunks, Chunk{ID: sha512.Sum512_256(b), Start: start, Size: uint64(len(b))})
	}
}

// chunker is casync's content-defined chunker: a buzhash over a 48-byte window, a boundary where
// the hash modulo a discriminator derived from the average size is discriminator-1, never
// before min bytes nor after max (desync chunker.go, same boundaries byte for byte).
type chunker struct {
	r             io.Reader
	min, avg, max uint64
	disc          uint32
	start         uint64
	buf           []byte
	n             int // valid bytes in buf
	eof           bool
}

const chunkerWindow = 48

func newChunker(r io.Reader, min, avg, max uint64) *chunker {
	return &chunker{r: r, min: min, avg: avg, max: max, disc: uint32(float64(avg) / (-1.42888852e-7*float64(avg) + 1.33237515)), buf: make([]byte, 2*max)}
}

// next returns the next chunk (valid until the following call), or an empty one at the end.
func (c *chunker) next() (uint64, []byte, error) {
	for !c.eof && uint64(c.n) < c.max {
		k, err := c.r.Read(c.buf[c.n:])
		c.n += k
		if err == io.EOF {
			c.eof = true
		} else if err != nil {
			return 0, nil, err
		}
	}
	if uint64(c.n) <= c.min {
		return c.split(c.n)
	}
	m := min(c.n, int(c.max))
	var hv uint32
	for i, b := range c.buf[c.min-chunkerWindow : c.min] {
		hv ^= bits.RotateLeft32(hashTable[b], chunkerWindow-i-1)
	}
	pos := int(c.min)
	for {
		in, out := c.buf[pos], c.buf[pos-chunkerWindow]
		hv = bits.RotateLeft32(hv, 1) ^ bits.RotateLeft32(hashTable[out], chunkerWindow) ^ hashTable[in]
		pos++
		if pos >= m || hv%c.disc == c.disc-1 {
			return c.split(pos)
		}
	}
}

func (c *chunker) split(i int) (uint64, []byte, error) {
	start := c.start
	out := make([]byte, i)
	copy(out, c.buf[:i])
	copy(c.buf, c.buf[i:c.n])
	c.n -= i
	c.start += uint64(i)
	return start, out, nil
}

// hashTable is casync's buzhash table (desync chunker.go, BSD-3-Clause).
var hashTable = []uint32{
	0x458be752, 0xc10748cc, 0xfbbcdbb8, 0x6ded5b68,
	0xb10a82b5, 0x20d75648, 0xdfc5665f, 0xa8428801,
	0x7ebf5191, 0x841135c7, 0x65cc53b3, 0x280a597c,
	0x16f60255, 0xc78cbc3e, 0x294415f5, 0xb938d494,
	0xec85c4e6, 0xb7d33edc, 0xe549b544, 0xfdeda5aa,
	0x882bf287, 0x3116737c, 0x05569956, 0xe8cc1f68,
	0x0806ac5e, 0x22a14443, 0x15297e10, 0x50d090e7,
	0x4ba60f6f, 0xefd9f1a7, 0x5c5c885c, 0x82482f93,
	0x9bfd7c64, 0x0b3e7276, 0xf2688e77, 0x8fad8abc,
	0xb0509568, 0xf1ada29f, 0xa53efdfe, 0xcb2b1d00,
	0xf2a9e986, 0x6463432b, 0x95094051, 0x5a223ad2,
	0x9be8401b, 0x61e579cb, 0x1a556a14, 0x5840fdc2,
	0x9261ddf6, 0xcde002bb, 0x52432bb0, 0xbf17373e,
	0x7b7c222f, 0x2955ed16, 0x9f10ca59, 0xe840c4c9,
	0xccabd806, 0x14543f34, 0x1462417a, 0x0d4a1f9c,
	0x087ed925, 0xd7f8f24c, 0x7338c425, 0xcf86c8f5,
	0xb19165cd, 0x9891c393, 0x325384ac, 0x0308459d,
	0x86141d7e, 0xc922116a, 0xe2ffa6b6, 0x53f52aed,
	0x2cd86197, 0xf5b9f498, 0xbf319c8f, 0xe0411fae,
	0x977eb18c, 0xd8770976, 0x9833466a, 0xc674df7f,
	0x8c297d45, 0x8ca48d26, 0xc49ed8e2, 0x7344f874,
	0x556f79c7, 0x6b25eaed, 0xa03e2b42, 0xf68f66a4,
	0x8e8b09a2, 0xf2e0e62a, 0x0d3a9806, 0x9729e493,
	0x8c72b0fc, 0x160b94f6, 0x450e4d3d, 0x7a320e85,
	0xbef8f0e1, 0x21d73653, 0x4e3d977a, 0x1e7b3929,
	0x1cc6c719, 0xbe478d53, 0x8d752809, 0xe6d8c2c6,
	0x275f0892, 0xc8acc273, 0x4cc21580, 0xecc4a617,
	0xf5f7be70, 0xe795248a, 0x375a2fe9, 0x425570b6,
	0x8898dcf8, 0xdc2d97c4, 0x0106114b, 0x364dc22f,
	0x1e0cad1f, 0xbe63803c, 0x5f69fac2, 0x4d5afa6f,
	0x1bc0dfb5, 0xfb273589, 0x0ea47f7b, 0x3c1c2b50,
	0x21b2a932, 0x6b1223fd, 0x2fe706a8, 0xf9bd6ce2,
	0xa268e64e, 0xe987f486, 0x3eacf563, 0x1ca2018c,
	0x65e18228, 0x2207360a, 0x57cf1715, 0x34c37d2b,
	0x1f8f3cde, 0x93b657cf, 0x31a019fd, 0xe69eb729,
	0x8bca7b9b, 0x4c9d5bed, 0x277ebeaf, 0xe0d8f8ae,
	0xd150821c, 0x31381871, 0xafc3f1b0, 0x927db328,
	0xe95effac, 0x305a47bd, 0x426ba35b, 0x1233af3f,
	0x686a5b83, 0x50e072e5, 0xd9d3bb2a, 0x8befc475,
	0x487f0de6, 0xc88dff89, 0xbd664d5e, 0x971b5d18,
	0x63b14847, 0xd7d3c1ce, 0x7f583cf3, 0x72cbcb09,
	0xc0d0a81c, 0x7fa3429b, 0xe9158a1b, 0x225ea19a,
	0xd8ca9ea3, 0xc763b282, 0xbb0c6341, 0x020b8293,
	0xd4cd299d, 0x58cfa7f8, 0x91b4ee53, 0x37e4d140,
	0x95ec764c, 0x30f76b06, 0x5ee68d24, 0x679c8661,
	0xa41979c2, 0xf2b61284, 0x4fac1475, 0x0adb49f9,
	0x19727a23, 0x15a7e374, 0xc43a18d5, 0x3fb1aa73,
	0x342fc615, 0x924c0793, 0xbee2d7f0, 0x8a279de9,
	0x4aa2d70c, 0xe24dd37f, 0xbe862c0b, 0x177c22c2,
	0x5388e5ee, 0xcd8a7510, 0xf901b4fd, 0xdbc13dbc,
	0x6c0bae5b, 0x64efe8c7, 0x48b02079, 0x80331a49,
	0xca3d8ae6, 0xf3546190, 0xfed7108b, 0xc49b941b,
	0x32baf4a9, 0xeb833a4a, 0x88a3f1a5, 0x3a91ce0a,
	0x3cc27da1, 0x7112e684, 0x4a3096b1, 0x3794574c,
	0xa3c8b6f3, 0x1d213941, 0x6e0a2e00, 0x233479f1,
	0x0f4cd82f, 0x6093edd2, 0x5d7d209e, 0x464fe319,
	0xd4dcac9e, 0x0db845cb, 0xfb5e4bc3, 0xe0256ce1,
	0x09fb4ed1, 0x0914be1e, 0xa5bdb2c3, 0xc6eb57bb,
	0x30320350, 0x3f397e91, 0xa67791bc, 0x86bc0e2c,
	0xefa0a7e2, 0xe9ff7543, 0xe733612c, 0xd185897b,
	0x329e5388, 0x91dd236b, 0x2ecb0d93, 0xf4d82a3d,
	0x35b5c03f, 0xe4e606f0, 0x05b21843, 0x37b45964,
	0x5eff22f4, 0x6027f4cc, 0x77178b3c, 0xae507131,
	0x7bf7cabc, 0xf9c18d66, 0x593ade65, 0xd95ddf11,
}
