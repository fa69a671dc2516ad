package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// providerPeer is the far end of the webhook providers: it records each
// message taken by channel and command_id; a channel can be down (503).
type providerPeer struct {
	down sync.Map // channel -> bool
	mu   sync.Mutex
	took map[string]int // "<channel>/<command_id>" -> 2xx answers
	n    atomic.Int64
}

func (p *providerPeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Channel   string `json:"channel"`
		CommandID string `json:"command_id"`
	}
	body, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(body, &req)
	if d, _ := p.down.Load(req.Channel); d == true {
		http.Error(w, "provider outage", http.StatusServiceUnavailable)
		return
	}
	p.mu.Lock()
	p.took[req.Channel+"/"+req.CommandID]++
	p.mu.Unlock()
	fmt.Fprintf(w, `{"id":"msg-%d"}`, p.n.Add(1))
}

func (p *providerPeer) count(prefix string) (keys, calls int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, n := range p.took {
		if strings.HasPrefix(k, prefix) {
			keys++
			calls += n
		}
	}
	return keys, calls
}
