// Package subscription owns R4 Subscriptions (subscription.html) and the
// R5 Subscriptions Backport for R4 (STU 1.1): their validation when
// written, the matching of every write against the active ones, the
// durable, at-least-once rest-hook and websocket delivery of the events,
// the backport's handshake, heartbeats, $status, $events and
// $get-ws-binding-token, and the masking of channel credentials on read.
//
// # Matching on commit
//
// Service is a fhir.CommitObserver (place it last in fhir.Config.Observers
// so that it hears of what the other observers derive). For every version
// a Commit writes it evaluates, in memory, the criteria of each active
// Subscription on that type against the version's own index entries
// (storage.Matches, the reference meaning of the search tree), ANDed with
// the read filter the Subscription's owner was granted. It never reads the
// database per Subscription; a match becomes a storage.Event appended by
// the same Commit (fhir.CommitSet.Enqueue), in the stream
// "Subscription/<id>", so an acknowledged write never loses its
// notification and a refused one leaves none. Criteria are compiled by the
// search engine (fhir.Server.CompileCriteria); parameters that need other
// resources (chains, _has) are refused at write time with a 422. Deletes
// notify nothing: a deleted version has no index entries to match.
//
// The active set lives in memory: loaded at Run, changed at once by the
// Subscription writes this process observes (before their Commit returns;
// a reload corrects a change whose Commit failed), reloaded when the
// newest Subscription version in the store changes (checked every
// Config.Check, so that Subscriptions written by other processes on the
// same database take effect within it: until then, writes to another
// process do not match a new Subscription), and in full every
// Config.Reload.
//
// # Ownership and authorization
//
// The client that creates a Subscription owns it; the server records the
// owner's client id, granted scopes and launch patient in a server-managed
// extension (ownerURL) that it sets on every write from the caller's
// Principal, so a client cannot forge it, and another client cannot take
// the Subscription over (403). Matching ANDs the owner's read decision
// (auth Policy.Decide, the one decision point) into the criteria, so a
// patient/ app's Subscription never carries another patient's resource.
//
// # Delivery
//
// Run also delivers. Each stream is leased through the store's KV
// (PutIfAbsent with expiry; see lease for what that relies on), so that of several processes on one database
// exactly one delivers a Subscription's events at a time, in stream
// (commit) order, one notification at a time (of one event, or of up to
// backport-max-count waiting events for a topic-based Subscription:
// batch.go); a process that dies loses its lease when
// it expires and another takes over. An event is deleted only after the
// endpoint answered 2xx (deletes are batched); a crash between the answer and the delete sends
// it again, with the same event id (at-least-once: receivers de-duplicate
// by X-Anodyne-Event-Id). Failures back off exponentially with jitter up
// to a cap; after Config.FailuresBeforeError consecutive failures the
// Subscription is set to status error with Subscription.error, and the
// worker keeps retrying at the capped interval, setting it active again
// when the endpoint answers. Deleting a Subscription, setting it off, or
// its end passing stops delivery and drops its stream.
//
// Each request follows R4 rest-hook: with channel.payload absent, a POST
// to channel.endpoint with an empty body; with application/fhir+json, a
// PUT of the version to channel.endpoint/<type>/<id>, the resource as the
// owner may receive it (through fhir.OutputFilter, like every read: a
// research owner gets it de-identified, under its pseudonymous id). Every
// request carries the channel.header values and:
//
//	X-Anodyne-Event-Id:      the event id (stable across retries and restarts)
//	X-Anodyne-Subscription:  Subscription/<id>
//	X-Anodyne-Signature:     sha256=<hex HMAC-SHA256(secret, event id + "." + body)>
//
// The secret is per Subscription: the client may set it in the channel
// extension secretURL (at least 16 characters), otherwise the server
// generates one; it is kept in the resource like channel.header (which in
// R4 already carries the receiver's credentials). Neither leaves as
// stored: Redact masks header values for every reader and the secret for
// all but the owner (security.go).
//
// # Backport topics
//
// A topic-based Subscription (criteria a topic of data/topics.json) gets
// history Bundles led by the SubscriptionStatus. Its stream starts with a
// handshake event queued in the Subscription's own Commit (status
// requested until the endpoint accepts it). Events are numbered at first
// attempt, under the stream's lease, and logged in the KV for $events.
// Heartbeats are not queued: the Run loop sends one under the lease when
// the period passed since the last notification (a KV clock shared by
// the processes). The websocket channel (websocket.go) delivers the same
// stream to the sockets bound in the process that holds the lease; a
// process claims a websocket stream only while it has a bound socket.
//
// The topics are also served as R4 resources, as the IG represents
// SubscriptionTopic in R4: a Basic per topic (topicbasic.go), generated
// from data/topics.json and written by Run, read through the normal paths.
//
// # Endpoint safety
//
// Endpoints must be https; http only to a loopback address when
// Config.AllowLoopback is set (development), to localhost or a loopback
// literal. The address a connection is
// made to is checked at dial time (after DNS, so rebinding cannot bypass
// it): loopback, private, link-local (including 169.254.169.254 cloud
// metadata), CGNAT, unspecified and multicast addresses are refused unless
// they fall in Config.Allow. Redirects are not followed, and every request
// has a timeout and a bounded response read.
//
// This package must not know a concrete backend, HTTP routing or token
// verification; it depends on fhir, auth and storage, never the reverse.
package subscription
