package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// watched is one informer and the target it watches.
type watched struct {
	target   target
	informer cache.SharedIndexInformer
	out      *recorder
}

// newWatched builds the informer for t: typed (the configured content type)
// when client-go's scheme knows the kind, dynamic (JSON) otherwise.
func newWatched(ctx context.Context, config *rest.Config, t target, out *recorder, resync time.Duration) (*watched, error) {
	lw, example, err := listWatch(config, t)
	if err != nil {
		return nil, err
	}
	w := &watched{target: t, out: out}
	recorded := recordCalls(lw, t.spec, out)
	w.informer = cache.NewSharedIndexInformerWithOptions(recorded, example, cache.SharedIndexInformerOptions{
		ResyncPeriod: resync,
	})
	_, err = w.informer.AddEventHandlerWithOptions(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			out.event(t.spec, "ADDED", obj, initial)
		},
		UpdateFunc: func(_, obj any) {
			out.event(t.spec, "MODIFIED", obj, false)
		},
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				out.write(record{Type: "event", Watch: t.spec, Event: "DELETED", Key: tomb.Key, FinalStateUnknown: true})
				return
			}
			out.event(t.spec, "DELETED", obj, false)
		},
	}, cache.HandlerOptions{})
	if err != nil {
		return nil, err
	}
	_ = ctx
	return w, nil
}

// dump writes the informer's whole cache, sorted by key.
func (w *watched) dump() {
	w.out.cache(w.target.spec, w.informer.GetStore().List())
}

// listWatch returns the list/watch functions for t and an example object of
// its kind.
func listWatch(config *rest.Config, t target) (*cache.ListWatch, runtime.Object, error) {
	withSelectors := func(opts *metav1.ListOptions) {
		if t.label != "" {
			opts.LabelSelector = t.label
		}
		if t.field != "" {
			opts.FieldSelector = t.field
		}
	}
	listKind := guessListKind(config, t.gvr)
	if listKind != nil && scheme.Scheme.Recognizes(*listKind) {
		client, err := typedClient(config, t.gvr.GroupVersion())
		if err != nil {
			return nil, nil, err
		}
		itemKind := listKind.GroupVersion().WithKind(listKind.Kind[:len(listKind.Kind)-len("List")])
		example, err := scheme.Scheme.New(itemKind)
		if err != nil {
			return nil, nil, err
		}
		lw := &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				withSelectors(&opts)
				return client.Get().Namespace(t.namespace).Resource(t.gvr.Resource).
					VersionedParams(&opts, scheme.ParameterCodec).Do(ctx).Get()
			},
			WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				withSelectors(&opts)
				opts.Watch = true
				return client.Get().Namespace(t.namespace).Resource(t.gvr.Resource).
					VersionedParams(&opts, scheme.ParameterCodec).Watch(ctx)
			},
		}
		return lw, example, nil
	}
	dyn, err := dynamic.NewForConfig(dynamicConfig(config))
	if err != nil {
		return nil, nil, err
	}
	var ri dynamic.ResourceInterface = dyn.Resource(t.gvr)
	if t.namespace != "" {
		ri = dyn.Resource(t.gvr).Namespace(t.namespace)
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			withSelectors(&opts)
			return ri.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			withSelectors(&opts)
			return ri.Watch(ctx, opts)
		},
	}
	return lw, &unstructured.Unstructured{}, nil
}

// guessListKind finds the list kind of a built-in resource from client-go's
// scheme (no discovery: the typed path is only for kinds the scheme knows).
func guessListKind(config *rest.Config, gvr schema.GroupVersionResource) *schema.GroupVersionKind {
	_ = config
	for gvk := range scheme.Scheme.AllKnownTypes() {
		if gvk.GroupVersion() != gvr.GroupVersion() || len(gvk.Kind) < 5 || gvk.Kind[len(gvk.Kind)-4:] != "List" {
			continue
		}
		plural, _ := meta.UnsafeGuessKindToResource(gvk.GroupVersion().WithKind(gvk.Kind[:len(gvk.Kind)-4]))
		if plural.Resource == gvr.Resource {
			found := gvk
			return &found
		}
	}
	return nil
}

func typedClient(config *rest.Config, gv schema.GroupVersion) (*rest.RESTClient, error) {
	c := rest.CopyConfig(config)
	c.GroupVersion = &gv
	c.APIPath = "/apis"
	if gv.Group == "" {
		c.APIPath = "/api"
	}
	c.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	client, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", gv, err)
	}
	return client, nil
}

// dynamicConfig: the dynamic client speaks JSON only.
func dynamicConfig(config *rest.Config) *rest.Config {
	c := rest.CopyConfig(config)
	c.ContentType = "application/json"
	c.AcceptContentTypes = "application/json"
	return c
}

// recordCalls wraps lw so every LIST and WATCH the reflector makes, and every
// watch error and close, is written out; the result keeps WatchList support.
func recordCalls(lw *cache.ListWatch, spec string, out *recorder) cache.ListerWatcher {
	list, watchFn := lw.ListWithContextFunc, lw.WatchFuncWithContext
	wrapped := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			obj, err := list(ctx, opts)
			rec := record{Type: "list", Watch: spec, ResourceVersion: opts.ResourceVersion,
				ResourceVersionMatch: string(opts.ResourceVersionMatch), Limit: opts.Limit, Continue: opts.Continue}
			if err != nil {
				rec.Error = err.Error()
			} else if m, merr := meta.ListAccessor(obj); merr == nil {
				rec.ListResourceVersion = m.GetResourceVersion()
				rec.Items = meta.LenList(obj)
			}
			out.write(rec)
			return obj, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := watchFn(ctx, opts)
			rec := record{Type: "watch", Watch: spec, ResourceVersion: opts.ResourceVersion,
				ResourceVersionMatch: string(opts.ResourceVersionMatch),
				SendInitialEvents:    opts.SendInitialEvents != nil && *opts.SendInitialEvents}
			if err != nil {
				rec.Error = err.Error()
				out.write(rec)
				return nil, err
			}
			out.write(rec)
			return newRecordedWatch(w, spec, out), nil
		},
	}
	return cache.ToListWatcherWithWatchListSemantics(wrapped, nil)
}

// recordedWatch passes a watch's events on, writing ERROR events and the
// stream's end.
type recordedWatch struct {
	inner  watch.Interface
	result chan watch.Event
	done   chan struct{}
	once   sync.Once
}

func newRecordedWatch(inner watch.Interface, spec string, out *recorder) *recordedWatch {
	r := &recordedWatch{inner: inner, result: make(chan watch.Event), done: make(chan struct{})}
	go func() {
		defer close(r.result)
		for ev := range inner.ResultChan() {
			if ev.Type == watch.Error {
				rec := record{Type: "watch_error", Watch: spec}
				if status, ok := ev.Object.(*metav1.Status); ok {
					rec.Code = int(status.Code)
					rec.Reason = string(status.Reason)
					rec.Error = status.Message
				}
				out.write(rec)
			}
			select {
			case r.result <- ev:
			case <-r.done:
				return
			}
		}
		out.write(record{Type: "watch_closed", Watch: spec})
	}()
	return r
}

func (r *recordedWatch) Stop() {
	r.once.Do(func() { close(r.done) })
	r.inner.Stop()
}
func (r *recordedWatch) ResultChan() <-chan watch.Event { return r.result }
