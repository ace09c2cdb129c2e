package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/anodyne-fhir/anodyne/storage"
)

// A transaction or batch Bundle file is imported as a client's Bundle
// would be processed: through the Bundle engine, in process.

// importTransaction runs a transaction or batch Bundle through this
// server's Bundle engine (runBundle), so that it is processed exactly as a
// client's would be (urn:uuid and conditional references, ifNoneExist,
// all-or-nothing for a transaction). It reports false, leaving the file to
// the resource-by-resource path, when the file is not such a Bundle, the
// database cannot run transactions, or the Bundle is larger than a client
// could post. n is the number of entries; for a transaction, the
// checkpoint marking the file complete goes into the transaction's own
// Commit when the backend can (stored reports it), so that a replay after
// a crash can never create its resources twice.
func (im *Importer) importTransaction(ctx context.Context, path string, raw []byte, rep *ImportReport, fc *fileCheckpoint, deferUnresolved bool) (done bool, n int, stored bool, err error) {
	var probe struct {
		ResourceType string            `json:"resourceType"`
		Type         string            `json:"type"`
		Entry        []json.RawMessage `json:"entry"`
	}
	if json.Unmarshal(raw, &probe) != nil || probe.ResourceType != "Bundle" || (probe.Type != "transaction" && probe.Type != "batch") {
		return false, 0, false, nil
	}
	n = len(probe.Entry)
	if int64(len(raw)) > im.s.maxBody {
		im.s.log.WarnContext(ctx, "import: importing the Bundle's resources in batches", "file", path,
			"reason", fmt.Sprintf("the Bundle is larger than a request may be (%d bytes)", im.s.maxBody))
		return false, n, false, nil
	}
	rctx, marks := ctx, (*commitMarks)(nil)
	if probe.Type == "transaction" {
		// A batch commits entry by entry: no one Commit could carry it.
		rctx, marks = withCommitMarks(ctx, []storage.KVPut{fc.put(n, true)})
	}
	res, err := im.s.runBundle(rctx, raw, "minimal")
	stored = marks != nil && marks.wasStored()
	if cerr := ctx.Err(); cerr != nil && !stored {
		return false, n, false, cerr
	}
	if errors.Is(err, errNoAtomicCommit) || errors.Is(err, errBundleTooLarge) {
		// No transactions on this database, or more entries than a client
		// may post: the Bundle's resources are imported in batches instead.
		im.s.log.WarnContext(ctx, "import: importing the Bundle's resources in batches", "file", path, "reason", err.Error())
		return false, n, false, nil
	}
	if errors.Is(err, errUnresolvedRef) && deferUnresolved && !stored {
		return false, n, false, errDeferred
	}
	if err != nil {
		fe := im.s.AsError(ctx, err)
		rep.Failed += int64(n) - 1
		im.fail(rep, ImportFailure{File: path, Entry: -1, Reason: fmt.Sprintf("%s rejected (%d entries not imported): %s", probe.Type, n, issuesText(fe.Issues))})
		return true, n, stored, nil
	}
	for i, e := range res.entries {
		if e.err == nil {
			rep.Stored++
			continue
		}
		im.fail(rep, ImportFailure{File: path, Entry: i, Reason: statusLine(e.err.Status) + ": " + issuesText(e.err.Issues)})
	}
	return true, n, stored, nil
}
