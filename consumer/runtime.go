package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/notifyd/notifyd/consumer/wmkafka"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"
	"github.com/segmentio/kafka-go"
)

// runtime is one Run of a Service: what it started, so that stop can undo
// it in order, whatever start got to.
type runtime struct {
	s   *Service
	cfg Config
	log *slog.Logger

	transport *kafka.Transport
	// pubTransport is the results publisher's (its own, so that its
	// batches do not queue behind the service's other requests).
	pubTransport *kafka.Transport
	client       *kafka.Client
	store        *projection.Store
	guard        *diskGuard
	stopGuard    context.CancelFunc
	guardDone    chan struct{}
	// fatal ends the service on an error nothing can recover from.
	runCtx        context.Context
	fatal         context.CancelCauseFunc
	followCtx     context.Context
	stopFollowing context.CancelFunc
	events        *follower
	results       *follower
	deliveries    *follower
	sessions      *follower
	// merchantsF follows merchant-settings, applied by merchantChanger.
	merchantsF *follower
	refreshed  chan struct{}
	pub        *wmkafka.Publisher
	commands   *kafka.Writer
	// deliveryWriter publishes delivery events (receipts), sessionsWriter
	// the ends of console sessions.
	deliveryWriter *kafka.Writer
	sessionsWriter *kafka.Writer
	// refused dead-letters the records the followers refuse.
	refused *recordDeadLetters
	// changer applies merchant-settings records.
	changer    *merchantChanger
	sub        *wmkafka.Subscriber
	router     *message.Router
	routerDone chan error
}

// publish makes the parts the Service's readers see the current ones
// changed by change: a new snapshot (running), never an edit of the one
// published. Only the runtime's goroutine (start, then stop) publishes.
func (rt *runtime) publish(change func(p *running)) {
	next := rt.s.parts()
	change(&next)
	rt.s.now.Store(&next)
}

// start brings the service up, in order: create or check the topics, open
// the store (rebuilding it when it is ahead of the log), follow
// payment-events and results, then consume commands on the Router. It
// returns once commands are being consumed.
func (rt *runtime) start(ctx context.Context) error {
	cfg, s := rt.cfg, rt.s
	// Metadata of notifyd's four topics only: kafka-go's transport otherwise
	// fetches every topic of the cluster every few seconds.
	conn := cfg.Conn()
	rt.transport = conn.Transport(cfg.Topics.PaymentEvents, cfg.Topics.Commands, cfg.Topics.Results, cfg.Topics.DeadLetter, cfg.Topics.Deliveries,
		cfg.Topics.ConsoleSessions, cfg.Topics.MerchantSettings)
	rt.client = conn.Client(rt.transport)
	rt.runCtx, rt.fatal = context.WithCancelCause(ctx)

	if err := rt.startGuard(); err != nil {
		return err
	}
	if err := s.ensureTopics(ctx, rt.client); err != nil {
		return err
	}
	if paused, _, _, _ := rt.guard.state(); paused {
		s.log.Warn("store.dir nearly full: waiting for room before opening the store")
	}
	if err := rt.guard.wait(ctx); err != nil {
		return fmt.Errorf("start: waiting for room in store.dir: %w", err)
	}
	refusedWriter := conn.Writer()
	refusedWriter.Transport = rt.transport
	rt.refused = &recordDeadLetters{writer: refusedWriter, topic: cfg.Topics.DeadLetter, metrics: s.metrics, health: &s.deadLetters,
		log: s.log.With("component", "dead-letters")}
	store, err := s.openStore(ctx, rt.client, func(partition int, r projection.Record, reason, detail string) error {
		// Only the payment-events follower refuses records, while it runs
		// (rt.followCtx is set before it starts).
		return rt.refused.write(rt.followCtx, cfg.Topics.PaymentEvents, partition, r, reason, detail)
	})
	if err != nil {
		return err
	}
	rt.store = store
	// A store that fails stops the service: it cannot be written again in
	// this process (projection.ErrStoreFailed).
	go func() {
		select {
		case <-store.Failed():
			rt.fatal(store.Err())
		case <-rt.runCtx.Done():
		}
	}()
	rt.publish(func(p *running) { p.store = store })
	dispatcher, err := dispatch.New(s.dcfg, store, s.log)
	if err != nil {
		return fmt.Errorf("dispatch: %w", err)
	}
	rt.publish(func(p *running) { p.dispatcher = dispatcher })
	rt.changer = &merchantChanger{merchants: s.merchants, compile: cfg.CompileMerchant, dispatcher: dispatcher, store: store,
		metrics: s.metrics, log: s.log.With("component", "merchants"),
		refused: func(partition int, r projection.Record, reason, detail string) error {
			return rt.refused.write(rt.followCtx, cfg.Topics.MerchantSettings, partition, r, reason, detail)
		}}
	if err := rt.changer.load(); err != nil {
		return fmt.Errorf("start: merchant settings: %w", err)
	}

	wm, err := rt.startFollowing(ctx, conn, store)
	if err != nil {
		return err
	}
	// A merchant's commands are decided with its own settings: none is
	// consumed before the settings published before this start are read.
	if err := waitMerchants(ctx, rt.merchantsF); err != nil {
		return err
	}
	return rt.startCommands(conn, store, dispatcher, wm)
}

// startGuard starts the free-space guard of store.dir, checked once
// before anything is opened.
func (rt *runtime) startGuard() error {
	cfg, s := rt.cfg, rt.s
	// The free-space guard, then topics and store: a store.dir short of
	// room waits for it before the store is opened.
	rt.guard = newDiskGuard(cfg.StoreDir, cfg.MinFreeBytes, cfg.BallastBytes, s.log.With("component", "disk"))
	if s.hooks.diskSpace != nil {
		rt.guard.space, rt.guard.interval = s.hooks.diskSpace, 20*time.Millisecond
	}
	rt.guard.waiting = s.hooks.diskWait
	var guardCtx context.Context
	guardCtx, rt.stopGuard = context.WithCancel(context.Background())
	rt.guardDone = make(chan struct{})
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return fmt.Errorf("store.dir: %w", err)
	}
	rt.guard.check() // the state at start-up, before anything is opened
	go func() { defer close(rt.guardDone); rt.guard.run(guardCtx) }()
	rt.publish(func(p *running) { p.guard = rt.guard })
	return nil
}

// startFollowing follows payment-events, results, deliveries and console
// sessions into the store, and refreshes their end offsets.
func (rt *runtime) startFollowing(ctx context.Context, conn Conn, store *projection.Store) (*watermarks, error) {
	cfg, s := rt.cfg, rt.s
	// Followers of payment-events and results, and the refresh of their
	// end offsets.
	rt.followCtx, rt.stopFollowing = context.WithCancel(context.Background())
	dialer := conn.Dialer()
	newFollower := func(topic string, stored func() map[int]int64, apply func(int, []projection.Record) error) *follower {
		if hook := s.hooks.apply; hook != nil {
			inner := apply
			apply = func(p int, r []projection.Record) error { hook(topic); return inner(p, r) }
		}
		return &follower{topic: topic, brokers: cfg.Brokers, dialer: dialer, client: rt.client, stored: stored, apply: apply,
			fail: rt.fatal, gate: rt.guard.wait, log: s.log.With("component", "follower"), ctx: rt.followCtx}
	}
	rt.events = newFollower(cfg.Topics.PaymentEvents, store.EventOffsets, func(p int, r []projection.Record) error {
		st, err := store.ApplyEvents(p, r)
		if err == nil {
			s.metrics.applied(st)
		}
		return err
	})
	rt.results = newFollower(cfg.Topics.Results, store.ResultOffsets, func(p int, r []projection.Record) error {
		added, err := store.ApplyResults(p, r)
		if err == nil {
			s.waiters.wake(added)
		}
		return err
	})
	rt.deliveries = newFollower(cfg.Topics.Deliveries, store.DeliveryOffsets, func(p int, r []projection.Record) error {
		return store.ApplyDeliveries(p, r)
	})
	rt.sessions = newFollower(cfg.Topics.ConsoleSessions, store.SessionOffsets, func(p int, r []projection.Record) error {
		return store.ApplySessionEnds(p, r)
	})
	rt.merchantsF = newFollower(cfg.Topics.MerchantSettings, store.MerchantOffsets, rt.changer.apply)
	rt.publish(func(p *running) { p.events, p.results = rt.events, rt.results })
	wm := newWatermarks(rt.client, cfg.Topics.PaymentEvents, cfg.Topics.Results, cfg.Topics.Deliveries, cfg.Topics.ConsoleSessions,
		cfg.Topics.MerchantSettings)
	offs, err := wm.Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	followers := []*follower{rt.events, rt.results, rt.deliveries, rt.sessions, rt.merchantsF}
	s.noteRound(offs, nil, followers...)
	// Console sessions are answered for once the topic is read as far as
	// this round saw it (SessionsEnded).
	s.sessionsRead.Store(false)
	rt.publish(func(p *running) { p.sessions = rt.sessions })
	rt.refreshed = make(chan struct{})
	go func() {
		defer close(rt.refreshed)
		s.refresh(rt.followCtx, rt.client, wm, followers...)
	}()

	return wm, nil
}

// startCommands consumes commands: the results publisher, the subscriber,
// the writers of in-process requesters, and the Router. It returns once
// commands are being consumed.
func (rt *runtime) startCommands(conn Conn, store *projection.Store, dispatcher *dispatch.Dispatcher, wm *watermarks) error {
	cfg, s := rt.cfg, rt.s
	// Commands: results publisher, subscriber, Router.
	var err error
	wlog := watermill.NewSlogLogger(s.log.With("component", "watermill"))
	rt.pubTransport = conn.Transport(cfg.Topics.Results, cfg.Topics.DeadLetter)
	if rt.pub, err = wmkafka.NewPublisher(wmkafka.PublisherConfig{
		Brokers: cfg.Brokers, ClientID: cfg.ClientID, OmitUUIDHeader: true, Topics: []string{cfg.Topics.Results, cfg.Topics.DeadLetter},
		Transport: rt.pubTransport,
	}, wlog); err != nil {
		return fmt.Errorf("results publisher: %w", err)
	}
	if rt.sub, err = wmkafka.NewSubscriber(wmkafka.SubscriberConfig{
		Brokers: cfg.Brokers, GroupID: cfg.GroupID, ClientID: cfg.ClientID, Dialer: conn.Dialer(),
		Concurrency: handedOutPerSlot * cfg.Concurrency, CloseTimeout: cfg.ShutdownTimeout,
		SessionTimeout: cfg.SessionTimeout, RebalanceTimeout: cfg.RebalanceTimeout, HeartbeatInterval: cfg.HeartbeatInterval,
	}, wlog); err != nil {
		return fmt.Errorf("commands subscriber: %w", err)
	}
	// In-process requesters' commands: same acks and batching as every
	// writer here (Conn.Writer), on the service's transport.
	rt.commands = conn.Writer()
	rt.commands.Transport = rt.transport
	// Delivery events from receipts, and the ends of console sessions:
	// the same.
	rt.deliveryWriter = conn.Writer()
	rt.deliveryWriter.Transport = rt.transport
	rt.sessionsWriter = conn.Writer()
	rt.sessionsWriter.Transport = rt.transport
	rec := &receipts{store: store, writer: rt.deliveryWriter, topic: cfg.Topics.Deliveries, source: "notifyd/" + cfg.ClientID,
		wait: cfg.CatchUpWait, redact: s.dcfg.Redactor, metrics: s.metrics, log: s.log.With("component", "receipts")}
	rt.publish(func(p *running) {
		p.sub, p.commands, p.sessionsWriter, p.receipts = rt.sub, rt.commands, rt.sessionsWriter, rec
	})
	lifecycle := &commandLifecycle{
		store: store, decisions: newIdempotency(store, s.hooks.lockWait), dispatcher: dispatcher, watermarks: wm, hooks: s.hooks,
		events: rt.events, results: rt.results, publisher: rt.pub, resultTopic: cfg.Topics.Results,
		source: "notifyd/" + cfg.ClientID, catchUpWait: cfg.CatchUpWait, maxAge: cfg.MaxCommandAge,
		now: time.Now, log: s.log.With("component", "commands"), metrics: s.metrics, guard: rt.guard,
		sending: make(chan struct{}, cfg.Concurrency),
	}
	// The Router's own close timeout only backs up the subscriber's
	// hand-over, which bounds the drain itself.
	if rt.router, err = message.NewRouter(message.RouterConfig{CloseTimeout: cfg.ShutdownTimeout + 15*time.Second}, wlog); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	dlq := deadLetterPublisher{Publisher: rt.pub, metrics: s.metrics, log: s.log.With("component", "dead-letters"), health: &s.deadLetters,
		retrying: s.hooks.deadLetterRetry}
	poison, err := middleware.PoisonQueueWithFilter(dlq, cfg.Topics.DeadLetter, isPoison)
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	// Infrastructure errors (broker, store) are retried in place with
	// backoff before the message is nacked, so an outage costs a log line
	// per backoff step rather than a redelivery every NackResendSleep.
	// Commands handed over undecided are not retried: they are the next
	// owner's now.
	retry := middleware.Retry{
		MaxRetries: 8, InitialInterval: 200 * time.Millisecond, Multiplier: 2, MaxInterval: 10 * time.Second,
		MaxElapsedTime: time.Minute, RandomizationFactor: 0.5, Logger: wlog,
		ShouldRetry: func(p middleware.RetryParams) bool {
			return !isPoison(p.Err) && !errors.Is(p.Err, errHandedOver)
		},
	}
	rt.router.AddMiddleware(middleware.CorrelationID, poison, retry.Middleware, middleware.Recoverer)
	rt.router.AddNoPublisherHandler("resend-commands", cfg.Topics.Commands, rt.sub, lifecycle.Handle)
	rt.routerDone = make(chan error, 1)
	go func() { rt.routerDone <- rt.router.Run(context.Background()) }()
	select {
	case <-rt.router.Running():
		close(s.running)
		s.log.Info("notifyd consuming commands", "topic", cfg.Topics.Commands, "group", cfg.GroupID, "brokers", cfg.Brokers)
		return nil
	case err := <-rt.routerDone:
		rt.routerDone = nil
		return fmt.Errorf("router: %w", err)
	}
}

// serve waits until ctx ends (nil), a follower fails fatally, or the Router
// stops by itself.
func (rt *runtime) serve(ctx context.Context) error {
	select {
	case <-rt.runCtx.Done():
	case err := <-rt.routerDone:
		rt.routerDone = nil
		if err != nil {
			return fmt.Errorf("router stopped: %w", err)
		}
	}
	if cause := context.Cause(rt.runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// stop undoes start, in this order, each step after the previous one
// returned:
//
//  1. stop consuming commands: closing the Router closes the subscriber,
//     which stops handing out commands, hands its partitions over (commands
//     not claimed yet are given up undecided; claimed ones finish within
//     processing.shutdown_timeout, their results published), commits, and
//     leaves the group; the Router then waits for its handlers;
//  2. close the results publisher: every result of a finished command is
//     written (publishing is synchronous; this flushes nothing pending);
//     and the writer of in-process requesters' commands (they are stopped
//     before the service: the caller's job);
//  3. stop following payment-events and results, and the refresh loop;
//  4. close the store;
//  5. stop the free-space guard;
//  6. close idle broker connections.
func (rt *runtime) stop() {
	if rt.router != nil {
		rt.log.Info("stopping: handing over in-flight commands", "timeout", rt.cfg.ShutdownTimeout.String())
	}
	for _, st := range rt.stopSteps() {
		if err := st.run(); err != nil {
			rt.log.Error("stop: "+st.name, "error", err)
		}
	}
}

// stopStep is one step of stop.
type stopStep struct {
	name string
	run  func() error
}

// stopSteps are stop's steps, in order (see stop).
func (rt *runtime) stopSteps() []stopStep {
	return []stopStep{
		{"stop consuming commands", func() error {
			if rt.router == nil {
				return nil
			}
			err := rt.router.Close()
			if rt.sub != nil {
				err = errors.Join(err, rt.sub.Close()) // already closed by the Router: returns at once
			}
			return err
		}},
		{"close the results publisher and the commands writer", func() error {
			var err error
			if rt.pub != nil {
				err = rt.pub.Close()
			}
			if rt.commands != nil {
				rt.publish(func(p *running) { p.commands, p.receipts, p.sessionsWriter = nil, nil, nil })
				err = errors.Join(err, rt.commands.Close(), rt.deliveryWriter.Close(), rt.sessionsWriter.Close())
			}
			return err
		}},
		{"stop following", func() error {
			if rt.stopFollowing == nil {
				return nil
			}
			rt.stopFollowing()
			if rt.events != nil {
				rt.events.Wait()
				rt.results.Wait()
				rt.deliveries.Wait()
				rt.sessions.Wait()
				rt.merchantsF.Wait()
			}
			if rt.refreshed != nil {
				<-rt.refreshed
			}
			return nil
		}},
		{"close the dead-letter writer of refused records", func() error {
			if rt.refused == nil {
				return nil
			}
			return rt.refused.writer.Close()
		}},
		{"close the store", func() error {
			if rt.store == nil {
				return nil
			}
			rt.publish(func(p *running) { p.store, p.dispatcher, p.sessions = nil, nil, nil })
			return rt.store.Close()
		}},
		{"stop the free-space guard", func() error {
			if rt.stopGuard != nil {
				rt.stopGuard()
				<-rt.guardDone
				rt.publish(func(p *running) { p.guard = nil })
			}
			return nil
		}},
		{"close connections", func() error {
			if rt.fatal != nil {
				rt.fatal(nil)
			}
			for _, t := range []*kafka.Transport{rt.transport, rt.pubTransport} {
				if t != nil {
					t.CloseIdleConnections()
				}
			}
			return nil
		}},
	}
}
