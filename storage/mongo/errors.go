package mongo

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/anodyne-fhir/anodyne/storage"
)

// classify marks errors that mean the deployment could not be reached in
// time (no server selectable, a network error, a driver timeout) as
// storage.ErrUnavailable, so that callers answer 503 and retry later
// rather than report an internal error. A write that failed this way has
// not been acknowledged: its transaction is aborted, or, without
// transactions, its commit record is rolled back at the next Open or by
// the next writer (see atomic.go). The caller's own cancellation stays a
// context error.
func classify(err *error) {
	e := *err
	if e == nil || errors.Is(e, storage.ErrUnavailable) || errors.Is(e, context.Canceled) {
		return
	}
	var sse topology.ServerSelectionError
	if errors.As(e, &sse) || mongo.IsNetworkError(e) || mongo.IsTimeout(e) || errors.Is(e, mongo.ErrClientDisconnected) {
		*err = fmt.Errorf("%w: %w", storage.ErrUnavailable, e)
	}
}
