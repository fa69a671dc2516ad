package consumer

import (
	"time"

	"github.com/cockroachdb/pebble/vfs"
)

// hooks are seams for tests, all nil in production: each is called at one
// point of a command's life or of following a topic, so that a test can
// learn that the point was reached, or hold the work there, instead of
// sleeping and hoping. They are set on a Service before Run.
type hooks struct {
	// lockWait is called when a handler finds another handler of its
	// command_id under way in this instance and starts waiting for it
	// (idempotency.lock).
	lockWait func(commandID string)
	// catchUpWait is called when a handler starts waiting for the store
	// to apply topic up to the end offsets read after the command arrived
	// (commandLifecycle.catchUp); not called when the store is there
	// already.
	catchUpWait func(commandID, topic string)
	// apply is called before a follower applies a batch of topic's
	// records; it may block, holding the follower there.
	apply func(topic string)
	// unknownWait is called when a handler starts waiting for the
	// transaction its command names to appear (processing.catch_up_wait).
	unknownWait func(commandID string)
	// deadLetterRetry is called when a dead letter could not be written
	// and will be tried again after wait (jittered, at most ceiling).
	deadLetterRetry func(wait, ceiling time.Duration)
	// storeFS is the filesystem the store is opened on (faults injected
	// through it); nil: the operating system's.
	storeFS vfs.FS
	// diskSpace replaces the free-space guard's reading of the filesystem
	// (projection.DiskSpace); diskWait is called when a command or a
	// follower starts waiting for the guard to resume.
	diskSpace func(dir string) (free, size uint64, err error)
	diskWait  func()
}
