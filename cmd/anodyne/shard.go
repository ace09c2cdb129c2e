package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo"
)

// mongoCommand is "anodyne mongo shard-setup": shard the database on a
// sharded cluster as storage/mongo's package doc designs it (resources by
// the patient partition key), or print the commands for an operator.
func mongoCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if err := checkSubcommand("mongo", args, []subcommand{
		{"shard-setup", "--mongodb-uri URI [--print] [flags]", "shard the database on a sharded cluster (patient compartments stay on one shard)"},
	}, stderr); err != nil {
		return err
	}
	fs := flag.NewFlagSet("anodyne mongo "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = subUsage(fs, stderr, "shard-setup --mongodb-uri URI [--print] [flags]\n\nRuns enableSharding and shardCollection for the database through a mongos\n(--print: writes the commands, one Extended JSON document a line, and runs nothing).", "mongo")
	var store serveConfig
	storeFlags(fs, &store)
	printOnly := fs.Bool("print", false, "print the admin commands instead of running them")
	if err := parseStoreCommand(fs, args[1:], getenv); err != nil {
		return err
	}
	if store.MongoURI == "" || fs.NArg() > 0 {
		fs.Usage()
		return usagef("mongo shard-setup: --mongodb-uri is required and takes no arguments")
	}
	st, err := openBackend(ctx, store, useEdit)
	if err != nil {
		return err
	}
	defer st.Close()
	b, ok := storage.As[*mongo.Backend](st.backend)
	if !ok {
		return fmt.Errorf("mongo shard-setup: the store is not MongoDB")
	}
	if *printOnly {
		for _, c := range b.ShardCommands() {
			raw, err := bson.MarshalExtJSON(c, false, false)
			if err != nil {
				return fmt.Errorf("encoding shard command: %w", err)
			}
			fmt.Fprintf(stdout, "%s\n", raw)
		}
		return nil
	}
	if err := b.ApplyShardCommands(ctx); err != nil {
		return fmt.Errorf("sharding database %q (the URI must point to a mongos of a sharded cluster; --print shows the commands): %w", store.MongoDB, err)
	}
	fmt.Fprintf(stdout, "database %q sharded: resources by hashed patient partition key, history by _id\n", store.MongoDB)
	return nil
}
