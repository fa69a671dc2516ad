// Package embedded runs an in-process Kafka-protocol broker so that notifyd
// starts with nothing else installed.
//
// The broker is github.com/twmb/franz-go/pkg/kfake: a single node that speaks
// the Kafka wire protocol, including consumer groups, so notifyd talks to it
// through kafka-go exactly as it talks to Apache Kafka. Its log is persisted
// in Config.DataDir, so topics, records and committed group offsets survive a
// restart of notifyd; the projection store and the broker's log therefore stay
// consistent with each other.
//
// It is meant for development, demos and tests: one node, replication factor
// 1, no authentication, loopback only by default. Production runs against a
// real Kafka cluster (kafka.brokers in the configuration).
package embedded
