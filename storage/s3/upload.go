package s3

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/walgo/walgo/storage"
)

// S3's limits on one object (AWS; other servers allow as much or more).
const (
	MinPartSize   = 5 << 20
	MaxPartSize   = 5 << 30
	MaxParts      = 10000
	MaxObjectSize = 5 << 40
)

// partGroups is how many times the part size may double in one upload:
// MaxParts/partGroups parts of each size.
const partGroups = 10

// partPlan decides the size of each part of an upload whose size is not
// known in advance: the first MaxParts/partGroups parts have the base
// size, the next as many twice that, and so on, up to the part size
// limit. With 8 MiB to start and S3's limits, the sizes stay 8 MiB up to
// 8 GiB and the upload holds up to 8 TiB (more than S3's 5 TiB object
// limit) in 10,000 parts, with a memory cost (Concurrency+1 parts) that
// grows with the object rather than being fixed for the largest one.
type partPlan struct {
	base, maxPart, maxObject int64
	maxParts                 int
}

// size is the size of part n (1-based).
func (p partPlan) size(n int) int64 {
	per := max(p.maxParts/partGroups, 1)
	s := p.base
	for g := (n - 1) / per; g > 0 && s < p.maxPart; g-- {
		s *= 2
	}
	return min(s, p.maxPart)
}

// send sends what r yields as key: one PutObject when it fits in the
// first part, a multipart upload otherwise. in carries the key, metadata
// and conditions; its Body is ignored.
func (s *Store) send(ctx context.Context, in *s3.PutObjectInput, r io.Reader) error {
	first, full, err := readUpTo(r, s.plan.size(1))
	if err != nil {
		return err
	}
	if !full {
		in.Body = bytes.NewReader(first)
		in.ContentLength = aws.Int64(int64(len(first)))
		_, err := s.client.PutObject(ctx, in, s.partOpts...)
		return err
	}
	cr, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket:      in.Bucket,
		Key:         in.Key,
		ContentType: in.ContentType,
		Metadata:    in.Metadata,
	}, s.partOpts...)
	if err != nil {
		return err
	}
	m := &multipart{s: s, ctx: ctx, in: in, id: aws.ToString(cr.UploadId)}
	if err := m.run(r, first); err != nil {
		if aerr := s.abort(ctx, aws.ToString(in.Key), m.id); aerr != nil {
			err = fmt.Errorf("%w (abort of upload %s failed too: %v)", err, m.id, aerr)
		}
		return err
	}
	return nil
}

// readUpTo reads r until it ends or size bytes are read (full), into a
// buffer that grows as needed: a small object costs little memory.
func readUpTo(r io.Reader, size int64) (b []byte, full bool, err error) {
	b = make([]byte, 0, min(size, 64<<10))
	for int64(len(b)) < size {
		if len(b) == cap(b) {
			b = append(b, make([]byte, min(int64(cap(b)), size-int64(len(b))))...)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
	return b, true, nil
}

// multipart is one multipart upload in flight.
type multipart struct {
	s   *Store
	ctx context.Context
	in  *s3.PutObjectInput
	id  string

	mu    sync.Mutex
	err   error
	parts []types.CompletedPart
}

func (m *multipart) fail(err error) {
	m.mu.Lock()
	if m.err == nil {
		m.err = err
	}
	m.mu.Unlock()
}

func (m *multipart) failed() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// run sends first as part 1 and the parts read from r after it,
// Concurrency at a time, then completes the upload. At most Concurrency+1
// parts are in memory: those in flight and the one being read. After a
// failure no new part starts, but those in flight are let finish rather
// than cancelled: a request cut off on the client's side may still reach
// the server after the abort, and store a part of an upload nobody will
// abort again.
func (m *multipart) run(r io.Reader, first []byte) error {
	ctx := m.ctx
	sem := make(chan struct{}, m.s.concurrency)
	var wg sync.WaitGroup
	total := int64(len(first))
	for n, part := 1, first; part != nil; n++ {
		sem <- struct{}{}
		if m.failed() != nil {
			<-sem
			break
		}
		p := part // part is read into below while this one is sent
		wg.Go(func() {
			defer func() { <-sem }()
			if err := m.sendPart(ctx, n, p); err != nil {
				m.fail(err)
			}
		})
		var err error
		if part, err = m.readPart(r, n+1, &total); err != nil {
			m.fail(err)
			break
		}
		if part != nil && n+1 > m.s.plan.maxParts {
			m.fail(fmt.Errorf("%w: the object needs more than %d parts", storage.ErrPermanent, m.s.plan.maxParts))
			break
		}
	}
	wg.Wait()
	if err := m.failed(); err != nil {
		return err
	}
	if err := m.ctx.Err(); err != nil {
		return err
	}
	sort.Slice(m.parts, func(i, j int) bool { return *m.parts[i].PartNumber < *m.parts[j].PartNumber })
	_, err := m.s.client.CompleteMultipartUpload(m.ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          m.in.Bucket,
		Key:             m.in.Key,
		UploadId:        aws.String(m.id),
		IfNoneMatch:     m.in.IfNoneMatch,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: m.parts},
	}, m.s.partOpts...)
	return err
}

// readPart reads part n from r: nil at the end of r.
func (m *multipart) readPart(r io.Reader, n int, total *int64) ([]byte, error) {
	buf := make([]byte, m.s.plan.size(n))
	k, err := io.ReadFull(r, buf)
	if err == io.EOF {
		return nil, nil
	}
	if err != nil && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	if *total += int64(k); *total > m.s.plan.maxObject {
		return nil, fmt.Errorf("%w: the object is larger than %d bytes", storage.ErrPermanent, m.s.plan.maxObject)
	}
	return buf[:k], nil
}

func (m *multipart) sendPart(ctx context.Context, n int, part []byte) error {
	out, err := m.s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket:        m.in.Bucket,
		Key:           m.in.Key,
		UploadId:      aws.String(m.id),
		PartNumber:    aws.Int32(int32(n)),
		Body:          bytes.NewReader(part),
		ContentLength: aws.Int64(int64(len(part))),
	}, m.s.partOpts...)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.parts = append(m.parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(n))})
	m.mu.Unlock()
	return nil
}
