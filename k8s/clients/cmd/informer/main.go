// Command informer runs client-go shared informers for the resources it is
// given, through the server it is given, and writes what client-go sees as
// JSON lines: every LIST and WATCH call the reflector makes, every watch
// error, every event delivered to the handlers, when the caches synced, and
// on SIGUSR1 or at exit (SIGTERM, SIGINT) each informer's whole cache.
//
// The tests use it as "what a real client-go component sees": the same
// program runs straight against kube-apiserver and through edge-proxy, and
// the two outputs are compared.
//
//	informer --server http://127.0.0.1:10261 --content-type protobuf \
//	    --watch v1/pods,field=spec.nodeName=n1 --watch discovery.k8s.io/v1/endpointslices
//
// A resource is group/version/resource (core: v1/pods), optionally followed
// by ,namespace=NS ,label=SELECTOR ,field=SELECTOR (a selector may not hold
// a comma: use several --watch flags for the same resource instead).
// Built-in types use client-go's typed codecs, so --content-type protobuf
// gets protobuf as kubelet and kube-proxy do; other types (CRDs) use the
// dynamic client, always JSON.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

type watchFlags []string

func (w *watchFlags) String() string     { return strings.Join(*w, " ") }
func (w *watchFlags) Set(v string) error { *w = append(*w, v); return nil }

// target is one --watch flag, parsed.
type target struct {
	spec      string
	gvr       schema.GroupVersionResource
	namespace string
	label     string
	field     string
}

func parseTarget(spec string) (target, error) {
	parts := strings.Split(spec, ",")
	t := target{spec: spec}
	segs := strings.Split(parts[0], "/")
	switch len(segs) {
	case 2:
		t.gvr = schema.GroupVersionResource{Version: segs[0], Resource: segs[1]}
	case 3:
		t.gvr = schema.GroupVersionResource{Group: segs[0], Version: segs[1], Resource: segs[2]}
	default:
		return t, fmt.Errorf("--watch %q: want [group/]version/resource", spec)
	}
	for _, p := range parts[1:] {
		key, value, ok := strings.Cut(p, "=")
		if !ok {
			return t, fmt.Errorf("--watch %q: %q is not key=value", spec, p)
		}
		switch key {
		case "namespace":
			t.namespace = value
		case "label":
			t.label = value
		case "field":
			t.field = value
		default:
			return t, fmt.Errorf("--watch %q: unknown key %q (namespace, label, field)", spec, key)
		}
	}
	return t, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "informer:", err)
		os.Exit(2)
	}
}

func run() error {
	var (
		watches     watchFlags
		server      = flag.String("server", "", "API server URL (overrides the kubeconfig's)")
		kubeconfig  = flag.String("kubeconfig", "", "kubeconfig file (default: none, plain --server)")
		token       = flag.String("token", "", "bearer token")
		caFile      = flag.String("ca-file", "", "CA bundle for an HTTPS server")
		insecure    = flag.Bool("insecure-skip-tls-verify", false, "do not verify the server's certificate")
		contentType = flag.String("content-type", "protobuf", "protobuf or json: what built-in types are asked for")
		watchList   = flag.String("watch-list", "default", "true, false or default: client-go's WatchListClient feature")
		resync      = flag.Duration("resync", 0, "informer resync period (0: none)")
		objects     = flag.Bool("objects", false, "write whole objects in events and cache dumps, not only keys and RVs")
		userAgent   = flag.String("user-agent", "informer/v0.0.0", "User-Agent (edge-proxy filters read the component from it)")
		qps         = flag.Float64("qps", 50, "client-side rate limit")
	)
	flag.Var(&watches, "watch", "[group/]version/resource[,namespace=NS][,label=SEL][,field=SEL]; repeatable")
	flag.Parse()
	if len(watches) == 0 {
		return errors.New("at least one --watch is required")
	}
	// client-go reads its feature gates from KUBE_FEATURE_<name> at first use.
	switch *watchList {
	case "true", "false":
		if err := os.Setenv("KUBE_FEATURE_WatchListClient", *watchList); err != nil {
			return err
		}
	case "default":
	default:
		return fmt.Errorf("--watch-list %q: want true, false or default", *watchList)
	}
	var targets []target
	for _, spec := range watches {
		t, err := parseTarget(spec)
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}

	config, err := restConfig(*kubeconfig, *server, *token, *caFile, *insecure)
	if err != nil {
		return err
	}
	config.UserAgent = *userAgent
	config.QPS = float32(*qps)
	config.Burst = int(*qps) * 2
	switch *contentType {
	case "protobuf":
		config.ContentType = "application/vnd.kubernetes.protobuf"
		config.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	case "json":
		config.ContentType = "application/json"
		config.AcceptContentTypes = "application/json"
	default:
		return fmt.Errorf("--content-type %q: want protobuf or json", *contentType)
	}

	out := newRecorder(os.Stdout, *objects)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var informers []*watched
	for _, t := range targets {
		w, err := newWatched(ctx, config, t, out, *resync)
		if err != nil {
			return err
		}
		informers = append(informers, w)
	}
	out.write(record{Type: "start", ContentType: *contentType, WatchList: *watchList})
	for _, w := range informers {
		go w.informer.Run(ctx.Done())
	}
	go func() {
		for _, w := range informers {
			for !w.informer.HasSynced() {
				if ctx.Err() != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		out.write(record{Type: "synced"})
	}()

	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	for sig := range signals {
		for _, w := range informers {
			w.dump()
		}
		if sig != syscall.SIGUSR1 {
			out.write(record{Type: "exit"})
			return nil
		}
	}
	return nil
}

func restConfig(kubeconfig, server, token, caFile string, insecure bool) (*rest.Config, error) {
	config := &rest.Config{}
	if kubeconfig != "" {
		loaded, err := clientcmd.BuildConfigFromFlags(server, kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		config = loaded
	} else if server == "" {
		return nil, errors.New("--server or --kubeconfig is required")
	}
	if server != "" {
		config.Host = server
	}
	if token != "" {
		config.BearerToken = token
	}
	if caFile != "" {
		config.CAFile = caFile
	}
	if insecure {
		config.Insecure = true
		config.CAFile, config.CAData = "", nil
	}
	return config, nil
}
