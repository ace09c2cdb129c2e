// Package sqlitedrivers compares the two SQLite drivers for database/sql
// that Anodyne could use: modernc.org/sqlite (pure Go, what storage/sqlite
// uses) and github.com/mattn/go-sqlite3 (cgo). It holds benchmarks only.
//
// The benchmarks live behind the build tag "sqlitedrivers" so that neither
// `go test ./...` nor the product binary ever needs cgo, a C toolchain or
// mattn/go-sqlite3; see drivers_test.go for how to run them. This package
// must not be imported by anything: it owns no product code and knows
// nothing of Anodyne's schema beyond the shape of its hottest statements.
package sqlitedrivers
