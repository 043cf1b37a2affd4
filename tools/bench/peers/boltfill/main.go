// boltfill writes N keys into a BoltDB file the way the xk6-kv fork's disk
// backend stores them (bucket "k6", JSON-serialized string values), in
// batches of one transaction each, so that run.sh can prefill the fork's
// disk store without paying one fsync'd transaction per key.
//
//	boltfill -path FILE -n N [-prefix-mod 10] [-value vvv...]
//
// Keys are p<i%10>:<i>, the names tools/bench/peers/workload.js uses.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	bolt "go.etcd.io/bbolt"
)

func main() {
	path := flag.String("path", "", "BoltDB file to create (replaced if it exists)")
	n := flag.Int("n", 10000, "number of keys")
	value := flag.String("value", strings.Repeat("v", 32), "string value of every key")
	flag.Parse()
	if *path == "" {
		fmt.Fprintln(os.Stderr, "boltfill: -path is required")
		os.Exit(2)
	}
	_ = os.Remove(*path)
	db, err := bolt.Open(*path, 0o600, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "boltfill:", err)
		os.Exit(1)
	}
	val, _ := json.Marshal(*value)
	const batch = 50000
	for start := 0; start < *n; start += batch {
		end := min(start+batch, *n)
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("k6"))
			if err != nil {
				return err
			}
			for i := start; i < end; i++ {
				if err := b.Put([]byte(fmt.Sprintf("p%d:%d", i%10, i)), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "boltfill:", err)
			os.Exit(1)
		}
	}
	if err := db.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "boltfill:", err)
		os.Exit(1)
	}
}
