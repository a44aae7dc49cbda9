// Package s3 is the scale-out artifact store: any S3-compatible object storage, through the AWS
// SDK. Devices do not download through the server: the artifact route redirects them to a
// pre-signed URL, and TUF hashes are still checked on the device.
package s3

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/release"
)

// Config names a bucket and how to reach it.
type Config struct {
	Bucket    string
	Endpoint  string // e.g. http://127.0.0.1:7070; empty: AWS
	Region    string
	AccessKey string
	SecretKey string
	PathStyle bool
	// Prefix is put before every object key ("tenants/acme/"): tenants of one server share a
	// bucket, each under its own prefix.
	Prefix string
}

// ParseURL reads "s3://bucket?endpoint=http://host:port&region=r&path_style=true&prefix=p/"; keys come from
// the arguments (the environment, in cmd/upkeep).
func ParseURL(raw, accessKey, secretKey string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return Config{}, fmt.Errorf("blob store %q: want s3://bucket?endpoint=...", raw)
	}
	q := u.Query()
	c := Config{Bucket: u.Host, Endpoint: q.Get("endpoint"), Region: q.Get("region"), AccessKey: accessKey, SecretKey: secretKey, PathStyle: true, Prefix: q.Get("prefix")}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	if v := q.Get("path_style"); v != "" {
		c.PathStyle, _ = strconv.ParseBool(v)
	}
	return c, nil
}

// Store keeps artifacts in a bucket under sha256/<hex>, with their SHA-512 and length as object
// metadata. It is safe for concurrent use.
type Store struct {
	c      *s3.Client
	bucket string
	prefix string
}

var _ release.BlobStore = (*Store)(nil)

// New makes a store. It does not create the bucket.
func New(cfg Config) *Store {
	c := s3.New(s3.Options{
		Region:       cfg.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		UsePathStyle: cfg.PathStyle,
		BaseEndpoint: nilIfEmpty(cfg.Endpoint),
		// Wider compatibility with S3-compatible servers.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	return &Store{c: c, bucket: cfg.Bucket, prefix: cfg.Prefix}
}

func nilIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// CreateBucket creates the bucket if it does not exist (for tests and first setup).
func (s *Store) CreateBucket(ctx context.Context) error {
	_, err := s.c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.bucket})
	var owned *types.BucketAlreadyOwnedByYou
	var exists *types.BucketAlreadyExists
	if err != nil && !errors.As(err, &owned) && !errors.As(err, &exists) {
		return fmt.Errorf("create bucket %s: %w", s.bucket, err)
	}
	return nil
}

func (s *Store) key(h string) string { return s.prefix + "sha256/" + h }

// Put implements release.BlobStore. The bytes stream to a temporary object while they are
// hashed; only a verified upload is copied to its content address.
func (s *Store) Put(ctx context.Context, r io.Reader, maxLength int64, want string) (*release.Blob, error) {
	h256, h512 := sha256.New(), sha512.New()
	lr := &countReader{r: io.LimitReader(r, maxLength+1)}
	b := make([]byte, 8)
	rand.Read(b)
	tmp := s.prefix + "tmp/" + hex.EncodeToString(b)
	up := manager.NewUploader(s.c, func(u *manager.Uploader) { u.PartSize = 16 << 20; u.Concurrency = 2 })
	if _, err := up.Upload(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &tmp, Body: io.TeeReader(lr, io.MultiWriter(h256, h512))}); err != nil {
		return nil, fmt.Errorf("upload artifact: %w", err)
	}
	defer s.c.DeleteObject(context.WithoutCancel(ctx), &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &tmp}) //nolint:errcheck // a leftover tmp object is harmless
	if lr.n > maxLength {
		return nil, apperr.E(apperr.TooLarge, "artifact is larger than the %d byte limit", maxLength)
	}
	blob := &release.Blob{SHA256: hex.EncodeToString(h256.Sum(nil)), SHA512: hex.EncodeToString(h512.Sum(nil)), Length: lr.n}
	if want != "" && want != blob.SHA256 {
		return nil, apperr.E(apperr.Verification, "uploaded artifact has sha256 %s, expected %s (truncated or corrupted upload)", blob.SHA256, want)
	}
	dst := s.key(blob.SHA256)
	_, err := s.c.CopyObject(ctx, &s3.CopyObjectInput{
		Bucket: &s.bucket, Key: &dst, CopySource: aws.String(s.bucket + "/" + tmp),
		MetadataDirective: types.MetadataDirectiveReplace,
		Metadata:          map[string]string{"sha512": blob.SHA512, "length": strconv.FormatInt(blob.Length, 10)},
	})
	if err != nil {
		return nil, fmt.Errorf("store artifact %s: %w", blob.SHA256, err)
	}
	return blob, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func notFound(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "NotFound" || ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "404")
}

// Stat implements release.BlobStore.
func (s *Store) Stat(ctx context.Context, h string) (*release.Blob, error) {
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return nil, apperr.E(apperr.Invalid, "sha256 must be 64 lowercase hex characters")
	}
	k := s.key(h)
	out, err := s.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &k})
	if err != nil {
		if notFound(err) {
			return nil, apperr.E(apperr.NotFound, "no artifact with sha256 %s", h)
		}
		return nil, fmt.Errorf("stat artifact %s: %w", h, err)
	}
	n, err := strconv.ParseInt(out.Metadata["length"], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("artifact %s has no length metadata", h)
	}
	return &release.Blob{SHA256: h, SHA512: out.Metadata["sha512"], Length: n}, nil
}

// Open implements release.BlobStore with a reader that fetches byte ranges as it is read and
// sought, so the server can still answer range requests when it must serve the bytes itself.
func (s *Store) Open(ctx context.Context, h string) (release.BlobReader, *release.Blob, error) {
	b, err := s.Stat(ctx, h)
	if err != nil {
		return nil, nil, err
	}
	return &rangeReader{ctx: ctx, s: s, key: s.key(h), size: b.Length}, b, nil
}

// PresignGet returns a URL that lets a device GET the artifact directly for ttl.
func (s *Store) PresignGet(ctx context.Context, h string, ttl time.Duration) (string, error) {
	k := s.key(h)
	req, err := s3.NewPresignClient(s.c).PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &k}, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("presign artifact %s: %w", h, err)
	}
	return req.URL, nil
}

type rangeReader struct {
	ctx  context.Context
	s    *Store
	key  string
	size int64
	off  int64
	body io.ReadCloser
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if r.body == nil {
		out, err := r.s.c.GetObject(r.ctx, &s3.GetObjectInput{Bucket: &r.s.bucket, Key: &r.key, Range: aws.String(fmt.Sprintf("bytes=%d-", r.off))})
		if err != nil {
			return 0, fmt.Errorf("read artifact: %w", err)
		}
		r.body = out.Body
	}
	n, err := r.body.Read(p)
	r.off += int64(n)
	if err == io.EOF && r.off < r.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *rangeReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	}
	if offset < 0 {
		return 0, errors.New("seek before start")
	}
	if offset != r.off && r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.off = offset
	return offset, nil
}

func (r *rangeReader) Close() error {
	if r.body != nil {
		return r.body.Close()
	}
	return nil
}
