package sqlite

import (
	"errors"
	"fmt"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/anodyne-fhir/anodyne/storage"
)

// classify turns the SQLite errors that mean "no room" or "could not get
// the database in time" into storage.ErrFull and storage.ErrUnavailable,
// keeping the original in the message. SQLite rolls the transaction back
// in both cases, so nothing of the write remains.
func classify(err error) error {
	var se *sqlite.Error
	if err == nil || !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%w: %w", storage.ErrFull, err)
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
	}
	return err
}
