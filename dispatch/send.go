package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/notifyd/notifyd/schemas"
	"golang.org/x/time/rate"
)

// Sending one accepted channel: through its routes in order (failover),
// each with its retries, rate limit and circuit breaker, asking the guard
// before every provider call.

// job is one accepted channel waiting to be sent.
type job struct {
	index     int
	routes    []*route
	msg       Message
	sessionID string // for log lines
	guard     *guarded
}

// Guard is asked before every provider call of a delivery (each attempt of
// each channel). An error stops the delivery: that call and every later one
// are not made, and DeliverGuarded returns the error instead of a result (a
// result with channels it was not allowed to try is no answer). The
// consumer's guard is wmkafka.Claim: an instance that no longer owns the
// command's partition must not call a provider again, not even to retry.
type Guard func() error

// guarded runs a Guard for the channels of one delivery and keeps its first
// refusal.
type guarded struct {
	guard Guard
	mu    sync.Mutex
	err   error
}

func (g *guarded) check() error {
	if g == nil || g.guard == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		g.err = g.guard()
	}
	return g.err
}

// refused returns the guard's refusal, if any, without asking it again.
func (g *guarded) refused() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// errNoToken: the rate limit has no token for a call before ctx's
// deadline.
var errNoToken = errors.New("the rate limit allows no call before the deadline")

// waitToken takes a token of l, waiting for it on the dispatcher's clock
// (d.clock, d.sleep: tests run it on a fake one). errNoToken when the token
// would come after ctx's deadline (then nothing is taken), ctx's error when
// it ends meanwhile.
func (d *Dispatcher) waitToken(ctx context.Context, l *rate.Limiter) error {
	now := d.clock()
	r := l.ReserveN(now, 1)
	if !r.OK() {
		return errNoToken
	}
	delay := r.DelayFrom(now)
	if delay <= 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
		r.CancelAt(now)
		return errNoToken
	}
	if err := d.sleep(ctx, delay); err != nil {
		r.CancelAt(d.clock())
		return err
	}
	return nil
}

// routeEnd is how a route's attempts at a channel ended.
type routeEnd int

const (
	routeSent  routeEnd = iota // the provider took the message
	routeFinal                 // failed, and no other route may help (recipient or content rejected, stopped)
	routeNext                  // failed in a way the next route may mend (unavailable, circuit open, account fault)
)

// send sends one accepted channel through its routes in order, each with
// its own retries, and completes its result: the first route that takes
// the message sends it; a route ending routeNext hands the channel to the
// next one (failover); the last route's failure is the channel's. The
// detail of a channel that went through several routes names each.
func (d *Dispatcher) send(ctx context.Context, j job, res schemas.ChannelResult) schemas.ChannelResult {
	ch := j.msg.Channel
	var details []string
	for i, rt := range j.routes {
		res.Provider = rt.name
		called := res.Attempts
		end, reason, detail := d.sendRoute(ctx, j, rt, &res)
		if res.Attempts > called {
			res.ProvidersTried = append(res.ProvidersTried, rt.name)
		}
		if end == routeSent {
			res.Status = schemas.StatusSent
			if a, ok := rt.provider.(Accounter); ok {
				res.ProviderAccount = a.Account()
			}
			return res
		}
		if len(j.routes) > 1 {
			detail = rt.name + ": " + detail
		}
		details = append(details, detail)
		if end == routeNext && i < len(j.routes)-1 {
			d.metrics.failover(rt.name, ch)
			d.log.Warn("provider failed over", "command_id", j.msg.CommandID, "session_id", j.sessionID, "channel", string(ch),
				"provider", rt.name, "next", j.routes[i+1].name, "reason", string(reason))
			continue
		}
		res.Status = schemas.StatusFailed
		res.Reason = reason
		res.Detail = strings.Join(details, "; ")
		return res
	}
	panic("dispatch: a job without routes") // check never makes one
}

// sendRoute makes the attempts of one route at a channel, within the
// route's retry policy and rate limit and as its circuit breaker allows,
// counting them in res (and setting its provider_message_id when sent).
// It returns how the route ended and, unless sent, the channel's reason
// and detail were it the last route.
func (d *Dispatcher) sendRoute(ctx context.Context, j job, rt *route, res *schemas.ChannelResult) (routeEnd, schemas.Reason, string) {
	p := rt.policy
	ch := j.msg.Channel
	attempts := 0
	unavailable := func(why, last string) (routeEnd, schemas.Reason, string) {
		return routeNext, schemas.ReasonProviderUnavailable, giveUp(attempts, why, last)
	}
	stopped := func(why, last string) (routeEnd, schemas.Reason, string) {
		return routeFinal, schemas.ReasonProviderUnavailable, giveUp(attempts, "stopped: "+why, last)
	}
	start := d.clock()
	deadline := start.Add(p.MaxElapsed)
	var lastDetail string
	for {
		if err := ctx.Err(); err != nil {
			return stopped(err.Error(), lastDetail)
		}
		remaining := deadline.Sub(d.clock())
		if remaining <= 0 {
			return unavailable("retry budget of "+p.MaxElapsed.String()+" used up", lastDetail)
		}
		if l := rt.limiter; l != nil {
			// Waiting for the rate limit is not part of the retry budget.
			waited := d.clock()
			if err := d.waitToken(ctx, l); err != nil {
				if ctx.Err() == nil { // the next token comes after ctx's deadline
					return unavailable("the rate limit allows no call before the deadline", lastDetail)
				}
				continue // ctx ended; reported at the top of the loop
			}
			deadline = deadline.Add(d.clock().Sub(waited))
		}
		if err := j.guard.check(); err != nil {
			return stopped(err.Error(), lastDetail)
		}
		done, err := rt.breaker.allow()
		if err != nil {
			return unavailable("circuit open, no call made", lastDetail)
		}
		actx, cancel := context.WithTimeout(ctx, min(p.AttemptTimeout, remaining))
		began := time.Now()
		receipt, err := rt.provider.Send(actx, j.msg)
		cancel()
		res.Attempts++
		attempts++
		d.metrics.attempt(rt.name, ch, attempts, time.Since(began), err)
		// A call cut short by the end of ctx (a stop) says nothing about
		// the provider.
		done(err != nil && ctx.Err() == nil && (!IsPermanent(err) || IsAccountFault(err)))
		if err == nil {
			res.ProviderMessageID = receipt.MessageID
			return routeSent, "", ""
		}
		lastDetail = d.attemptFailed(j, rt, res.Recipient, attempts, err)
		if IsPermanent(err) {
			end := routeFinal
			if IsAccountFault(err) {
				end = routeNext
			}
			return end, schemas.ReasonProviderRejected, "provider rejected the message: " + lastDetail
		}
		if ctx.Err() != nil {
			continue // reported at the top of the loop
		}
		if attempts >= p.MaxAttempts {
			return unavailable("", lastDetail)
		}
		wait := max(p.backoff(attempts), retryAfter(err))
		if !d.clock().Add(wait).Before(deadline) {
			return unavailable("next retry in "+wait.String()+" would pass the retry budget of "+p.MaxElapsed.String(), lastDetail)
		}
		if err := d.sleep(ctx, wait); err != nil {
			continue // ctx ended; reported at the top of the loop
		}
	}
}

// attemptFailed logs a failed provider attempt and returns its detail for
// the result. Providers keep secrets and contacts out of details; this
// makes sure, with every secret of the configuration.
func (d *Dispatcher) attemptFailed(j job, rt *route, recipient string, attempt int, err error) string {
	ch := j.msg.Channel
	detail := d.redact.Text(ch, j.msg.To, errorDetail(err))
	if detail == "" {
		detail = "provider error"
	}
	d.log.Warn("provider attempt failed",
		"command_id", j.msg.CommandID,
		"session_id", j.sessionID,
		"channel", string(ch),
		"recipient", recipient,
		"provider", rt.name,
		"attempt", attempt,
		"permanent", IsPermanent(err),
		"error", d.redact.Text(ch, j.msg.To, err.Error()))
	return detail
}

// giveUp phrases a provider_unavailable detail.
func giveUp(attempts int, why, last string) string {
	var b strings.Builder
	b.WriteString("provider unavailable")
	if attempts > 0 {
		fmt.Fprintf(&b, " after %d attempt", attempts)
		if attempts > 1 {
			b.WriteString("s")
		}
	}
	if why != "" {
		b.WriteString(" (" + why + ")")
	}
	if last != "" {
		b.WriteString(": " + last)
	}
	return b.String()
}
