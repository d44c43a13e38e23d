package main

import (
	"encoding/json"
	"io"
	"sort"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/cache"
)

// record is one JSON line of output; empty fields are left out.
type record struct {
	Type                 string       `json:"type"`
	Time                 float64      `json:"time"`
	Watch                string       `json:"watch,omitempty"`
	Event                string       `json:"event,omitempty"`
	Key                  string       `json:"key,omitempty"`
	ResourceVersion      string       `json:"resourceVersion,omitempty"`
	ResourceVersionMatch string       `json:"resourceVersionMatch,omitempty"`
	ListResourceVersion  string       `json:"listResourceVersion,omitempty"`
	Limit                int64        `json:"limit,omitempty"`
	Continue             string       `json:"continue,omitempty"`
	Items                int          `json:"items,omitempty"`
	SendInitialEvents    bool         `json:"sendInitialEvents,omitempty"`
	InitialList          bool         `json:"initialList,omitempty"`
	FinalStateUnknown    bool         `json:"finalStateUnknown,omitempty"`
	Code                 int          `json:"code,omitempty"`
	Reason               string       `json:"reason,omitempty"`
	Error                string       `json:"error,omitempty"`
	ContentType          string       `json:"contentType,omitempty"`
	WatchList            string       `json:"watchList,omitempty"`
	Object               any          `json:"object,omitempty"`
	Cache                []cacheEntry `json:"cache,omitempty"`
	CacheSize            *int         `json:"cacheSize,omitempty"`
}

// cacheEntry is one object of a cache dump.
type cacheEntry struct {
	Key             string `json:"key"`
	ResourceVersion string `json:"resourceVersion"`
	Object          any    `json:"object,omitempty"`
}

// recorder writes records as JSON lines, one at a time, each flushed whole.
type recorder struct {
	mu      sync.Mutex
	enc     *json.Encoder
	objects bool
}

func newRecorder(w io.Writer, objects bool) *recorder {
	return &recorder{enc: json.NewEncoder(w), objects: objects}
}

func (r *recorder) write(rec record) {
	rec.Time = float64(time.Now().UnixNano()) / 1e9
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.enc.Encode(rec)
}

func (r *recorder) event(spec, kind string, obj any, initial bool) {
	rec := record{Type: "event", Watch: spec, Event: kind, InitialList: initial}
	rec.Key, _ = cache.MetaNamespaceKeyFunc(obj)
	if m, err := meta.Accessor(obj); err == nil {
		rec.ResourceVersion = m.GetResourceVersion()
	}
	if r.objects {
		rec.Object = obj
	}
	r.write(rec)
}

func (r *recorder) cache(spec string, objs []any) {
	entries := make([]cacheEntry, 0, len(objs))
	for _, obj := range objs {
		e := cacheEntry{}
		e.Key, _ = cache.MetaNamespaceKeyFunc(obj)
		if m, err := meta.Accessor(obj); err == nil {
			e.ResourceVersion = m.GetResourceVersion()
		}
		if r.objects {
			e.Object = obj
		}
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Key < entries[j].Key })
	n := len(entries)
	r.write(record{Type: "cache", Watch: spec, Cache: entries, CacheSize: &n})
}
