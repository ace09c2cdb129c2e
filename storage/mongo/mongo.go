// Package mongo is the MongoDB backend of Anodyne: it implements
// storage.Backend and storage.Describer with the official driver
// (go.mongodb.org/mongo-driver/v2). It owns the collection layout, the
// translation of storage.Expr into MongoDB filters, and the detection of
// what a deployment can do (transactions, $elemMatch). It knows nothing of
// FHIR: it stores the records, entries and claims the fhir and resources
// packages hand it, and must never depend on them or on a test server.
//
// # Layout
//
// Five collections in the configured database:
//
//   - resources: one document per resource, _id "Type/id", holding the
//     current version: t (type), i (id), v (versionId), u (lastUpdated as a
//     BSON date, for ranges) and un (the same in Unix nanoseconds, so that
//     the caller's instant round-trips exactly), d (deleted), m (method), j
//     (the raw JSON as BSON binary, byte-exact), s (Seq), c (the claim) and
//     the search index in two shapes:
//   - e: the entries as sub-documents with the storage.Entry field names
//     (p, k, t, x, s, c, rt, ri, ru, lo, hi, nl, nh, n, parts). Zero values
//     are omitted; the query translation treats a missing field as its zero
//     value, as storage.Matches does. On a real MongoDB, $elemMatch on e
//     makes several conditions hold on one entry, and multikey indexes on
//     e.p + e.lo / e.nl serve range searches.
//   - k: keys as composite strings "param␟kind" (the resource has an entry
//     of that parameter), "param␟kind␟field␟value" for every non-empty
//     string field of an entry and "param␟kind␟ref␟Type/id" for local
//     references. Equality on an array element needs no $elemMatch, so k is
//     the part of a filter that FerretDB can evaluate and that a multikey
//     index {t, k} serves on MongoDB.
//   - history: one document per version (_id "Type/id/version"), with s,
//     and that version's own index entries in k and e as on resources (a
//     delete: a copy of the deleted version's), ek true when they were
//     kept (documents written before have none and never match a filtered
//     history).
//   - counters: the Seq counter ({_id: "seq", n}).
//   - claims: _id is the claim (unique by construction), r the holder, cm
//     the commit record that took it while that commit is pending.
//   - commits: the commit records of multi-write commits on deployments
//     without transactions (see Writes); pc on resources and history
//     documents names the record that locked or wrote them, ph marks the
//     placeholder that locks a resource a pending commit creates.
//   - outbox: storage.Events until deleted (_id the event id, st, s, n, d,
//     pc while pending; see outbox.go).
//   - kv: _id the key, v the value, x the expiry (TTL index where the server
//     has one; every read also checks x, because TTL monitors are lazy), g
//     the generation: a random token drawn by every write of the record
//     (absent on records written before it existed).
//   - kvlocks: the locks of conditional KV changes (see kvcas.go): _id
//     "key\x00generation", n a nonce, t the time taken; "…\x00generation
//     \x00broken\x00nonce" marks a stale lock that one caller broke.
//
// All indexes are created at Open; creating an existing index is a no-op.
//
// # Queries
//
// A Query becomes one filter on resources. Where $elemMatch works (probed
// at Open with a known document: FerretDB either rejects it or silently
// matches nothing) the filter is exact and paging runs in the database by
// keyset on _id ("Type/id" orders like type then id, because '/' sorts
// before every character of a type name). Otherwise the filter is a
// superset built from k, and the candidates are re-checked in Go with
// storage.Matches against their stored entries before sorting and paging.
// A single-key Sort on an exact filter runs in the database too, on sort
// keys denormalised into each document (see order.go; the k_odate index
// serves a patient's trend newest first). Other sorts (several keys, or a
// superset filter) are applied in Go over the matching ids and entries (a
// projection, not the JSON), so their cost grows with the number of
// matches; beyond maxCandidates such a search fails with ErrUnsupported
// instead of answering partially. A reference equality on type and id is
// exact even without $elemMatch, through its "Type/id" key. On FerretDB, where every find is a full scan, all
// searches take the Go path with whole documents in a single find (see
// Backend.dbPaging).
//
// Chain and Has run without $lookup, in two phases: the inner query is
// evaluated to ids (at most maxJoin, else ErrUnsupported), then the outer
// filter uses $in.
//
// # Writes
//
// Writes use write concern majority with journaling. Compare-and-set is a
// conditional replace on {_id, v: expect}, or an insert for ExpectVersion 0
// (a duplicate key is a version conflict). On a replica set or sharded
// cluster (detected with hello) every Commit runs in a multi-document
// transaction, so it is atomic and Seq follows commit order. On a deployment
// without transactions (a standalone server, FerretDB):
//
//   - a single write is a short sequence: the claim, the history document
//     (whose unique _id "Type/id/version" is the lock that lets one of
//     several racing writers proceed, because FerretDB's findAndModify is
//     not atomic against concurrent writers), then the conditional replace
//     of the resource; a failed step removes what the earlier ones wrote. A
//     crash between the history insert and the resource leaves a history
//     document for a version that never became current; the next writer of
//     that version removes it once it is a minute old. History readers may
//     briefly see a version before Read does.
//   - several writes go through a durable commit record (atomic.go): lock,
//     commit point, apply; readers decide by the record's state, searches
//     re-run when a commit is decided during their scan, and Open rolls
//     unfinished records forward or back. Capabilities therefore reports
//     AtomicCommit=true on every deployment.
//   - CommitWithKV (storage.KVCommitter) lists its KV puts in the commit
//     record (even for one write), stored when the record is applied, so a
//     crash leaves writes and puts both stored or both absent after recovery.
//   - Seq is drawn from a counter before the write, so it is unique and
//     increasing per resource, but concurrent writers may become visible out
//     of Seq order.
package mongo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Limits that keep a single request bounded in memory and round trips.
const (
	maxCount      = 1000   // largest page
	defaultCount  = 100    // page size when the caller gives none (history)
	maxCandidates = 100000 // matches a Go-side sort or re-check may hold
	maxJoin       = 1000   // ids an inner Chain/Has query may produce
)

// codeNamespaceExists is the server's error code for creating an existing collection.
const codeNamespaceExists = 48

// Collection names.
const (
	colResources = "resources"
	colHistory   = "history"
	colCounters  = "counters"
	colClaims    = "claims"
	colKV        = "kv"
	colKVLocks   = "kvlocks"
	colProbe     = "probe"
)

// Backend is a storage.Backend over one MongoDB database.
type Backend struct {
	client *mongo.Client
	db     *mongo.Database
	log    *slog.Logger

	res, hist, counters, claims, kv, kvLocks *mongo.Collection

	// Detected at Open; never changed afterwards.
	name         string
	version      string
	topology     string
	transactions bool
	elemMatch    bool
	aggPipeline  bool // storage.Aggregator runs in the database (see aggregate.go)
	ttl          bool
	notes        []string

	// dbPaging: exact searches without a sort are paged by the server
	// (keyset on _id, limit, count). Off on FerretDB, where every find and
	// count is a full scan, so one Go-side pass over a single find is
	// cheaper than a count plus a sorted find (measured: 132 ms against
	// 385 ms for 300 documents).
	dbPaging bool

	// candidateLimit is maxCandidates, lowered by tests to show which
	// searches are answered without holding every match in Go.
	candidateLimit int

	// staleAfter is how old the leftovers of an interrupted write (a claim
	// or a history document) must be before another writer removes them;
	// staleClaimAge, except in tests that simulate a crash.
	staleAfter time.Duration

	// kvLockStale is how old a KV generation lock must be before another
	// caller breaks it (kvLockStaleAge; see kvcas.go).
	kvLockStale time.Duration

	// part, when set, keys every document with its partition (see
	// partition.go); targeting says searches may filter on that key,
	// decided at Open.
	part      *storage.Partitioning
	targeting bool
}

var (
	_ storage.Backend   = (*Backend)(nil)
	_ storage.Describer = (*Backend)(nil)
)

// Option configures Open.
type Option func(*config)

type config struct {
	log            *slog.Logger
	partitioning   *storage.Partitioning
	selectTimeout  time.Duration
	connectTimeout time.Duration
}

// defaultSelectTimeout bounds how long a call waits for a reachable
// server before failing with storage.ErrUnavailable (the driver's own
// default, 30 s, would hold every request that long during an outage).
const defaultSelectTimeout = 5 * time.Second

// WithServerSelectionTimeout sets how long a call may wait for a reachable
// server (default 5 s); serverSelectionTimeoutMS in the URI wins.
func WithServerSelectionTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.selectTimeout = d
		}
	}
}

// WithConnectTimeout bounds how long Open waits for the deployment to
// answer at all (its first ping), so that a wrong URI or a database that
// is down fails at once with ErrUnreachable instead of after the driver's
// server selection timeout (30 s). Zero keeps the driver's.
func WithConnectTimeout(d time.Duration) Option { return func(c *config) { c.connectTimeout = d } }

// ErrUnreachable: Open got no answer from the deployment within the
// connect timeout.
var ErrUnreachable = errors.New("mongo: deployment unreachable")

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// Open connects to uri, uses database, probes what the deployment can do
// and creates the indexes.
func Open(ctx context.Context, uri, database string, opts ...Option) (*Backend, error) {
	cfg := config{log: slog.Default(), selectTimeout: defaultSelectTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	if database == "" {
		return nil, errors.New("mongo: open: empty database name")
	}
	wc := writeconcern.Majority()
	journal := true
	wc.Journal = &journal
	client, err := mongo.Connect(options.Client().SetServerSelectionTimeout(cfg.selectTimeout).ApplyURI(uri).SetWriteConcern(wc))
	if err != nil {
		return nil, fmt.Errorf("mongo: connect: %w", err)
	}
	if cfg.connectTimeout > 0 {
		pctx, cancel := context.WithTimeout(ctx, cfg.connectTimeout)
		err := client.Ping(pctx, nil)
		cancel()
		if err != nil {
			_ = client.Disconnect(context.WithoutCancel(ctx))
			if ctx.Err() != nil {
				return nil, fmt.Errorf("mongo: connect: %w", ctx.Err())
			}
			return nil, fmt.Errorf("%w: no answer within %s: %s", ErrUnreachable, cfg.connectTimeout, firstLine(err))
		}
	}
	db := client.Database(database)
	b := &Backend{
		client:   client,
		db:       db,
		log:      cfg.log,
		res:      db.Collection(colResources),
		hist:     db.Collection(colHistory),
		counters: db.Collection(colCounters),
		claims:   db.Collection(colClaims),
		kv:       db.Collection(colKV),
		kvLocks:  db.Collection(colKVLocks),

		staleAfter:  staleClaimAge,
		kvLockStale: kvLockStaleAge,
		part:        cfg.partitioning,
	}
	if err := b.setup(ctx); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, err
	}
	for _, n := range b.notes {
		b.log.InfoContext(ctx, "mongo backend capability", "database", database, "note", n)
	}
	return b, nil
}

func (b *Backend) setup(ctx context.Context) error {
	var hello bson.M
	if err := b.db.RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		return fmt.Errorf("mongo: hello: %w", err)
	}
	_, replSet := hello["setName"]
	b.transactions = replSet || hello["msg"] == "isdbgrid"
	switch {
	case hello["msg"] == "isdbgrid":
		b.topology = "sharded"
	case replSet:
		b.topology = "replicaSet"
	default:
		b.topology = "standalone"
	}

	var info bson.M
	if err := b.db.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		return fmt.Errorf("mongo: buildInfo: %w", err)
	}
	b.name = "mongodb"
	b.version, _ = info["version"].(string)
	if v, ok := info["ferretdbVersion"]; ok {
		b.name = "ferretdb"
		if fv, ok := v.(string); ok {
			b.version = fv + " (MongoDB " + b.version + " compatible)"
		}
	}
	// Collections used inside transactions must exist beforehand on
	// servers older than 4.4; the others are created with their indexes.
	for _, name := range []string{colCounters, colClaims, colCommits, colOutbox, colKV} {
		err := b.db.CreateCollection(ctx, name)
		var ce mongo.CommandError
		if err != nil && !(errors.As(err, &ce) && ce.Code == codeNamespaceExists) {
			return fmt.Errorf("mongo: create collection %s: %w", name, err)
		}
	}
	b.dbPaging = b.name != "ferretdb"
	b.candidateLimit = maxCandidates
	if err := b.createIndexes(ctx); err != nil {
		return err
	}
	em, err := b.probeElemMatch(ctx)
	if err != nil {
		return err
	}
	b.elemMatch = em
	if b.aggPipeline, err = b.probeAggregate(ctx); err != nil {
		return err
	}
	if err := b.setupPartitioning(ctx); err != nil {
		return err
	}
	if !b.transactions {
		b.notes = append(b.notes, "no multi-document transactions: Commit of several writes uses a commit record, searches re-run when a commit lands during them")
		if err := b.recover(ctx); err != nil {
			return err
		}
	}
	if !b.elemMatch {
		b.notes = append(b.notes, "$elemMatch unavailable: searches use a superset filter re-checked in Go, paging in Go")
	}
	if !b.aggPipeline {
		b.notes = append(b.notes, "aggregation pipeline unavailable: statistics reduce a projection of the matching index entries in Go")
	}
	if !b.ttl {
		b.notes = append(b.notes, "no TTL index: expired KV records are removed when read")
	}
	return nil
}

func (b *Backend) createIndexes(ctx context.Context) error {
	specs := []struct {
		col    *mongo.Collection
		models []mongo.IndexModel
	}{
		{b.res, []mongo.IndexModel{
			index("t_k", nil, "t", "k"),
			index("k", nil, "k"),
			index("t_ep_elo", nil, "t", "e.p", "e.lo"),
			index("t_ep_enl", nil, "t", "e.p", "e.nl"),
			index("t_id", nil, "t", "_id"),
			// One patient's trend by date, newest first (see order.go).
			index("k_odate", nil, "k", "-o.date~date.h", "_id"),
			index("i", nil, "i"),
		}},
		{b.outbox(), []mongo.IndexModel{
			index("st_s_n", nil, "st", "s", "n"),
		}},
		{b.hist, []mongo.IndexModel{
			index("s", options.Index().SetUnique(true), "-s"),
			index("t_s", nil, "t", "-s"),
			index("t_i_s", nil, "t", "i", "-s"),
			// Filtered history: a compartment filter is equality on k.
			index("k_s", nil, "k", "-s"),
		}},
	}
	for _, s := range specs {
		if err := ensureIndexes(ctx, s.col, s.models); err != nil {
			return err
		}
	}
	err := ensureIndexes(ctx, b.kv, []mongo.IndexModel{index("x_ttl", options.Index().SetExpireAfterSeconds(0), "x")})
	if err == nil {
		b.ttl = true
		return nil
	}
	// FerretDB answers NotImplemented for TTL; reads check expiry anyway.
	var ce mongo.CommandError
	if !errors.As(err, &ce) {
		return err
	}
	b.log.DebugContext(ctx, "TTL index unavailable", "err", err)
	return ensureIndexes(ctx, b.kv, []mongo.IndexModel{index("x", nil, "x")})
}

// index builds an index model named name on fields ("-f" for descending).
func index(name string, opts *options.IndexOptionsBuilder, fields ...string) mongo.IndexModel {
	keys := bson.D{}
	for _, f := range fields {
		dir := 1
		if f[0] == '-' {
			f, dir = f[1:], -1
		}
		keys = append(keys, bson.E{Key: f, Value: dir})
	}
	if opts == nil {
		opts = options.Index()
	}
	return mongo.IndexModel{Keys: keys, Options: opts.SetName(name)}
}

// ensureIndexes creates the indexes that do not exist yet. Asking for an
// existing one is a no-op on MongoDB, but FerretDB v1.24 drops the
// connection (a panic in its handler), so existing names are skipped.
func ensureIndexes(ctx context.Context, col *mongo.Collection, models []mongo.IndexModel) error {
	have := map[string]bool{}
	cur, err := col.Indexes().List(ctx)
	if err != nil {
		return fmt.Errorf("mongo: list indexes of %s: %w", col.Name(), err)
	}
	var specs []struct {
		Name string `bson:"name"`
	}
	if err := cur.All(ctx, &specs); err != nil {
		return fmt.Errorf("mongo: list indexes of %s: %w", col.Name(), err)
	}
	for _, s := range specs {
		have[s.Name] = true
	}
	var missing []mongo.IndexModel
	for _, m := range models {
		var o options.IndexOptions
		for _, set := range m.Options.List() {
			if err := set(&o); err != nil {
				return fmt.Errorf("mongo: index options: %w", err)
			}
		}
		if o.Name == nil || !have[*o.Name] {
			missing = append(missing, m)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := col.Indexes().CreateMany(ctx, missing); err != nil {
		return fmt.Errorf("mongo: create indexes on %s: %w", col.Name(), err)
	}
	return nil
}

// probeElemMatch checks $elemMatch against a known document, because
// FerretDB either rejects it or silently matches nothing.
func (b *Backend) probeElemMatch(ctx context.Context) (bool, error) {
	col := b.db.Collection(colProbe)
	doc := bson.D{{Key: "_id", Value: "elemMatch"}, {Key: "e", Value: bson.A{
		bson.D{{Key: "p", Value: "a"}, {Key: "n", Value: 1.0}},
		bson.D{{Key: "p", Value: "b"}, {Key: "n", Value: 5.0}},
	}}}
	if _, err := col.ReplaceOne(ctx, bson.D{{Key: "_id", Value: "elemMatch"}}, doc, options.Replace().SetUpsert(true)); err != nil {
		return false, fmt.Errorf("mongo: write $elemMatch probe: %w", err)
	}
	n, err := col.CountDocuments(ctx, bson.D{{Key: "_id", Value: "elemMatch"}, {Key: "e", Value: bson.D{{Key: "$elemMatch", Value: bson.D{
		{Key: "p", Value: "a"}, {Key: "n", Value: bson.D{{Key: "$lt", Value: 2.0}}},
	}}}}})
	if err != nil {
		var ce mongo.CommandError
		if errors.As(err, &ce) {
			return false, nil
		}
		return false, fmt.Errorf("mongo: $elemMatch probe: %w", err)
	}
	if n != 1 {
		return false, nil
	}
	// A second, negative probe: conditions on different entries must not match.
	n, err = col.CountDocuments(ctx, bson.D{{Key: "_id", Value: "elemMatch"}, {Key: "e", Value: bson.D{{Key: "$elemMatch", Value: bson.D{
		{Key: "p", Value: "a"}, {Key: "n", Value: bson.D{{Key: "$gt", Value: 2.0}}},
	}}}}})
	if err != nil {
		return false, fmt.Errorf("mongo: $elemMatch probe: %w", err)
	}
	return n == 0, nil
}

// Capabilities reports what was detected at Open.
func (b *Backend) Capabilities(context.Context) storage.Capabilities {
	return storage.Capabilities{
		Name:         b.name,
		AtomicCommit: true, // transactions, or commit records without them
		Notes:        append([]string(nil), b.notes...),
		Version:      b.version,
		Topology:     b.topology,
		Transactions: b.transactions,
	}
}

// Ping checks that the primary answers.
func (b *Backend) Ping(ctx context.Context) error {
	if err := b.client.Ping(ctx, nil); err != nil {
		return fmt.Errorf("mongo: ping: %w", err)
	}
	return nil
}

// Close disconnects. Acknowledged writes were journaled on a majority.
func (b *Backend) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.client.Disconnect(ctx); err != nil {
		return fmt.Errorf("mongo: disconnect: %w", err)
	}
	return nil
}

// firstLine is the driver's error without the topology description it
// appends to server selection failures, which says nothing an operator
// can act on.
func firstLine(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ", current topology:"); i > 0 {
		msg = msg[:i]
	}
	if i := strings.IndexByte(msg, '\n'); i > 0 {
		msg = msg[:i]
	}
	return msg
}
