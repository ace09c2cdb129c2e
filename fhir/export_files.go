package fhir

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// exportFiles is where a job's NDJSON files live: in the Backend's KV
// (kvFiles, the default: every process sharing the store serves every
// job's files) or in a directory (dirFiles: Config.ExportDir, which must
// be shared by all the processes of a deployment, and the command line's
// direct export).
type exportFiles interface {
	// create starts file name of job id, replacing an earlier one.
	create(ctx context.Context, id, name string) (exportFileWriter, error)
	// open reads a finished file.
	open(ctx context.Context, id string, o exportOutput) (io.ReadSeekCloser, error)
	// remove deletes every file of job id.
	remove(ctx context.Context, id string) error
}

type exportFileWriter interface {
	io.Writer
	// commit makes the file durable and returns its size in bytes.
	commit() (int64, error)
	// abort releases the writer of a file that will not be committed.
	abort()
}

// dirFiles keeps files in dir/<job>/<name>, or dir/<name> when flat.
type dirFiles struct {
	dir  string
	flat bool
}

func (d dirFiles) jobDir(id string) string {
	if d.flat {
		return d.dir
	}
	return filepath.Join(d.dir, id)
}

func (d dirFiles) create(_ context.Context, id, name string) (exportFileWriter, error) {
	dir := d.jobDir(id)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating export directory: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("creating export file: %w", err)
	}
	return &dirFile{f: f, w: bufio.NewWriterSize(f, 64<<10)}, nil
}

func (d dirFiles) open(_ context.Context, id string, o exportOutput) (io.ReadSeekCloser, error) {
	f, err := os.Open(filepath.Join(d.jobDir(id), o.File))
	if err != nil {
		return nil, fmt.Errorf("opening export file: %w", err)
	}
	return f, nil
}

func (d dirFiles) remove(_ context.Context, id string) error {
	if d.flat {
		return nil
	}
	if err := os.RemoveAll(d.jobDir(id)); err != nil {
		return fmt.Errorf("removing export files of job %s: %w", id, err)
	}
	return nil
}

type dirFile struct {
	f    *os.File
	w    *bufio.Writer
	size int64
}

func (f *dirFile) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	f.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("writing export file: %w", err)
	}
	return n, nil
}

func (f *dirFile) commit() (int64, error) {
	err := f.w.Flush()
	if err == nil {
		err = f.f.Sync()
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("writing export file: %w", err)
	}
	return f.size, nil
}

func (f *dirFile) abort() { _ = f.f.Close() }

// Export files in the KV: file name of job id is a run of chunk records
// "bulk/export/file/<id>/<name>/<n>" (n zero-padded to 8 digits, from 0),
// each exactly chunk bytes of the file except the last. The job's
// exportOutput.Size says how many chunks make the file, so chunks left
// by an interrupted earlier attempt beyond it are never read. Every chunk
// expires exportFileTTL after it is written, a bound on leftovers of jobs
// deleted while a process that died was still writing them.
const (
	bulkFilePrefix  = "bulk/export/file/"
	exportChunkSize = 1 << 20
	exportFileTTL   = 7 * 24 * time.Hour
)

type kvFiles struct {
	kv    storage.KV
	chunk int // chunk size in bytes (exportChunkSize; smaller in tests)
}

func filePrefix(id, name string) string { return bulkFilePrefix + id + "/" + name + "/" }

func chunkKey(id, name string, n int64) string {
	return fmt.Sprintf("%s%08d", filePrefix(id, name), n)
}

func (k kvFiles) create(ctx context.Context, id, name string) (exportFileWriter, error) {
	return &kvFile{ctx: ctx, k: k, id: id, name: name, buf: make([]byte, 0, k.chunk)}, nil
}

func (k kvFiles) open(ctx context.Context, id string, o exportOutput) (io.ReadSeekCloser, error) {
	return &kvFileReader{ctx: ctx, k: k, id: id, name: o.File, size: o.Size, cur: -1}, nil
}

func (k kvFiles) remove(ctx context.Context, id string) error {
	keys, err := k.kv.List(ctx, bulkFilePrefix+id+"/")
	if err != nil {
		return fmt.Errorf("listing export files of job %s: %w", id, err)
	}
	for _, key := range keys {
		if err := k.kv.Delete(ctx, key); err != nil {
			return fmt.Errorf("removing export files of job %s: %w", id, err)
		}
	}
	return nil
}

type kvFile struct {
	ctx      context.Context
	k        kvFiles
	id, name string
	buf      []byte
	n        int64 // chunks written
	size     int64
}

func (f *kvFile) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		room := f.k.chunk - len(f.buf)
		take := min(room, len(p))
		f.buf = append(f.buf, p[:take]...)
		p = p[take:]
		written += take
		if len(f.buf) == f.k.chunk {
			if err := f.flush(); err != nil {
				return written, err
			}
		}
	}
	f.size += int64(written)
	return written, nil
}

func (f *kvFile) flush() error {
	if err := f.k.kv.Put(f.ctx, chunkKey(f.id, f.name, f.n), f.buf, exportFileTTL); err != nil {
		return fmt.Errorf("writing export file %s of job %s: %w", f.name, f.id, err)
	}
	f.n++
	f.buf = f.buf[:0]
	return nil
}

func (f *kvFile) commit() (int64, error) {
	if len(f.buf) > 0 {
		if err := f.flush(); err != nil {
			return 0, err
		}
	}
	return f.size, nil
}

func (f *kvFile) abort() {}

// kvFileReader reads a file chunk by chunk, holding one chunk at a time.
type kvFileReader struct {
	ctx      context.Context
	k        kvFiles
	id, name string
	size     int64
	off      int64
	cur      int64 // index of the chunk in data; -1 none
	data     []byte
}

func (r *kvFileReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n := r.off / int64(r.k.chunk)
	if n != r.cur {
		v, err := r.k.kv.Get(r.ctx, chunkKey(r.id, r.name, n))
		if err != nil {
			return 0, fmt.Errorf("reading export file %s of job %s: %w", r.name, r.id, err)
		}
		want := min(int64(r.k.chunk), r.size-n*int64(r.k.chunk))
		if int64(len(v)) < want {
			return 0, fmt.Errorf("reading export file %s of job %s: chunk %d has %d bytes, want %d", r.name, r.id, n, len(v), want)
		}
		r.cur, r.data = n, v[:want]
	}
	c := copy(p, r.data[r.off-n*int64(r.k.chunk):])
	r.off += int64(c)
	return c, nil
}

func (r *kvFileReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("export file: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("export file: negative position")
	}
	r.off = offset
	return offset, nil
}

func (r *kvFileReader) Close() error { return nil }
