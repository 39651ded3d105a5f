package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
)

// rank is the status order of docs/events.md: the rank of a status within one attempt of a call.
var rank = map[string]int{
	"registered": 0,
	"ongoing":    1,
	"completed":  2,
	"failed":     2,
	"error":      2,
	"cancelled":  2,
	"retry":      2,
}

// unknownRank is what a status the table does not know (the platform may add some) counts as.
const unknownRank = 1

type held struct {
	Status string `json:"status"`
	Retry  int    `json:"retry"`
	rank   int
}

// calls dedupes events by id and keeps the latest status of each call, by the status order
// rather than by arrival (a webhook the bridge answered 503 is retried minutes later and can
// arrive after the call's later statuses).
type calls struct {
	name       string
	seen       map[string]bool // in production: a table keyed by event id, or an idempotent upsert
	received   int
	skipped    int
	duplicates int
	stale      int
	latest     map[string]held
}

func newCalls(name string) *calls {
	return &calls{name: name, seen: map[string]bool{}, latest: map[string]held{}}
}

// parse reads one message's `data` with the typed model generated from the event's JSON Schema
// (models.go, scripts/gen-models). A message that is not an event (no id, or a body the model
// refuses) is counted as skipped, with the reason on stderr, and nil returned: the caller acks it
// and goes on, so it never blocks the events behind it.
func (c *calls) parse(eventID string, body []byte, where string) *CallData {
	c.received++
	var d CallData
	err := json.Unmarshal(body, &d)
	switch {
	case eventID == "":
		err = fmt.Errorf("no event id")
	case err == nil && d.CallID == "":
		err = fmt.Errorf("no call_id")
	}
	if err != nil {
		c.skipped++
		fmt.Fprintf(os.Stderr, "skipped %s: %v\n", where, err)
		return nil
	}
	return &d
}

// handle processes one parsed event; false means a duplicate (already processed).
func (c *calls) handle(eventID string, d *CallData) bool {
	if c.seen[eventID] {
		c.duplicates++
		return false
	}
	c.seen[eventID] = true
	if d.Status == nil { // started, recording and some analyses carry no status
		return true
	}
	retry := 0
	if d.Retry != nil {
		retry = *d.Retry
	}
	status := *d.Status
	r, ok := rank[status]
	if !ok {
		r = unknownRank
	}
	h, known := c.latest[d.CallID]
	switch {
	case !known || retry > h.Retry || (retry == h.Retry && r > h.rank):
		c.latest[d.CallID] = held{Status: status, Retry: retry, rank: r}
	case retry < h.Retry || r < h.rank:
		c.stale++ // an older status arriving late: discarded
	}
	return true
}

func (c *calls) summary() string {
	ids := make([]string, 0, len(c.latest))
	for id := range c.latest {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := map[string]any{
		"consumer":   c.name,
		"received":   c.received,
		"skipped":    c.skipped,
		"duplicates": c.duplicates,
		"events":     len(c.seen),
		"stale":      c.stale,
		"calls":      c.latest,
	}
	b, _ := json.Marshal(out)
	return string(b)
}
