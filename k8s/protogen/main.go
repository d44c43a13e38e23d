// protogen writes src/edgeproxy/kube/prototables.py: the protobuf field
// tables of every built-in kind kube-apiserver serves, read by reflection
// from the Go types of k8s.io/api and k8s.io/apimachinery (their `protobuf`
// struct tags are generated from the same generated.proto files, and only
// the Go types say what the JSON form drops: json tags, omitempty/omitzero,
// pointer fields).
//
//	cd k8s/protogen && GOTOOLCHAIN=local GOFLAGS=-mod=mod go run . > ../../src/edgeproxy/kube/prototables.py
//
// It lives in its own module (a copy of k8s/clients' go.mod) so the client
// programs' build hash does not change with it.
package main

import (
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
)

const (
	metaPkg     = "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimePkg  = "k8s.io/apimachinery/pkg/runtime"
	resourcePkg = "k8s.io/apimachinery/pkg/api/resource"
	intstrPkg   = "k8s.io/apimachinery/pkg/util/intstr"
)

// Types whose wire form is written by hand-written Marshal methods (or whose
// JSON form is not their fields): the Python side converts them.
var special = map[string]string{
	metaPkg + ".Time":            "1 seconds! int64; 2 nanos! int32",
	metaPkg + ".MicroTime":       "1 seconds! int64; 2 nanos! int32",
	metaPkg + ".Duration":        "1 duration! int64",
	metaPkg + ".FieldsV1":        "1 Raw! json",
	resourcePkg + ".Quantity":    "1 string! string",
	intstrPkg + ".IntOrString":   "1 type! int64; 2 intVal! int32; 3 strVal! string",
	runtimePkg + ".RawExtension": "1 raw! json",
	runtimePkg + ".TypeMeta":     "1 apiVersion string; 2 kind string",
	runtimePkg + ".Unknown":      "1 typeMeta runtime.TypeMeta; 2 raw bytes; 3 contentEncoding string; 4 contentType string",
}

var (
	specs    = map[string]string{}
	wrappers = map[string]bool{}
)

// messageName is the short, unique name of a Go type's message: the package
// path after k8s.io/api/ or apimachinery's pkg/(apis/), dots for slashes.
func messageName(t reflect.Type) string {
	p := t.PkgPath()
	for _, prefix := range []string{"k8s.io/api/", "k8s.io/apimachinery/pkg/apis/", "k8s.io/apimachinery/pkg/util/", "k8s.io/apimachinery/pkg/api/", "k8s.io/apimachinery/pkg/"} {
		if strings.HasPrefix(p, prefix) {
			p = strings.TrimPrefix(p, prefix)
			break
		}
	}
	return strings.ReplaceAll(p, "/", ".") + "." + t.Name()
}

func scalar(t reflect.Type) (string, bool) {
	switch t.Kind() {
	case reflect.String:
		return "string", true
	case reflect.Bool:
		return "bool", true
	case reflect.Int32:
		return "int32", true
	case reflect.Int64, reflect.Int:
		return "int64", true
	case reflect.Float64:
		return "double", true
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "bytes", true
		}
	}
	return "", false
}

// typeOf names a field's element type, walking messages it meets.
func typeOf(t reflect.Type) string {
	if s, ok := scalar(t); ok {
		return s
	}
	switch t.Kind() {
	case reflect.Struct:
		return walk(t)
	case reflect.Slice:
		// A named slice with a message of its own (metav1.Verbs, authentication's ExtraValue).
		name := messageName(t)
		if _, done := specs[name]; !done {
			specs[name] = "" // guard against recursion
			specs[name] = "1 items [" + typeOf(t.Elem()) + "]"
			wrappers[name] = true
		}
		return name
	}
	panic(fmt.Sprintf("no protobuf form for %v", t))
}

// hasMessage: a named type with a Marshal method of its own (metav1.Verbs).
func hasMessage(t reflect.Type) bool {
	_, ok := reflect.New(t).Interface().(interface{ Marshal() ([]byte, error) })
	return ok && t.Name() != ""
}

func walk(t reflect.Type) string {
	name := messageName(t)
	if _, done := specs[name]; done {
		return name
	}
	if spec, ok := special[t.PkgPath()+"."+t.Name()]; ok {
		specs[name] = spec
		return name
	}
	specs[name] = "" // recursion guard (JSONSchemaProps-like types refer to themselves)
	var parts []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("protobuf")
		if tag == "" || tag == "-" {
			continue
		}
		opts := strings.Split(tag, ",")
		number, label := opts[1], opts[2]
		protoName := ""
		for _, o := range opts[3:] {
			if strings.HasPrefix(o, "name=") {
				protoName = strings.TrimPrefix(o, "name=")
			}
		}
		jsonTag := strings.Split(f.Tag.Get("json"), ",")
		jsonName := jsonTag[0]
		omitempty, omitzero, inline := false, false, false
		for _, o := range jsonTag[1:] {
			omitempty = omitempty || o == "omitempty"
			omitzero = omitzero || o == "omitzero"
			inline = inline || o == "inline"
		}
		// encoding/json inlines an embedded struct that has no name of its own.
		inline = inline || (f.Anonymous && jsonName == "")
		if jsonName == "" || jsonName == "-" {
			jsonName = protoName
		}
		ft := f.Type
		pointer := false
		if ft.Kind() == reflect.Pointer {
			pointer, ft = true, ft.Elem()
		}
		var typ string
		switch {
		case inline:
			typ, jsonName = "&"+typeOf(ft), "_"
		case ft.Kind() == reflect.Map:
			typ = "{" + typeOf(ft.Elem()) + "}"
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.Uint8 && !hasMessage(ft):
			_ = label // upstream tags some repeated fields "opt" and one message "rep": the Go type decides
			typ = "[" + typeOf(ft.Elem()) + "]"
		default:
			typ = typeOf(ft)
		}
		flags := ""
		if pointer {
			flags += "?"
		} else if !omitempty && !omitzero {
			flags += "!"
		}
		if omitzero {
			flags += "~"
		}
		parts = append(parts, number+" "+jsonName+flags+" "+typ)
	}
	specs[name] = strings.Join(parts, "; ")
	return name
}

func main() {
	kinds := map[string]string{}
	meta := map[string]string{}
	for gvk, t := range scheme.Scheme.AllKnownTypes() {
		if _, ok := reflect.New(t).Interface().(interface{ Marshal() ([]byte, error) }); !ok {
			continue // internal or JSON-only types
		}
		switch {
		case strings.HasPrefix(t.PkgPath(), "k8s.io/api/"):
			kinds[fmt.Sprintf("(%q, %q)", gvk.GroupVersion().String(), gvk.Kind)] = walk(t)
		case t.PkgPath() == metaPkg:
			meta[fmt.Sprintf("%q", gvk.Kind)] = walk(t)
		}
	}
	for _, t := range []reflect.Type{reflect.TypeOf(metav1.WatchEvent{}), reflect.TypeOf(metav1.Status{}), reflect.TypeOf(metav1.List{})} {
		meta[fmt.Sprintf("%q", t.Name())] = walk(t)
	}
	specs["runtime.Unknown"] = special[runtimePkg+".Unknown"]
	specs["runtime.TypeMeta"] = special[runtimePkg+".TypeMeta"]

	w := os.Stdout
	fmt.Fprint(w, `"""Generated protobuf field tables of the built-in kinds: do not edit.

Written by k8s/protogen from the Go types of k8s.io/api and
k8s.io/apimachinery v0.37.2 (their protobuf tags come from the same
generated.proto files; their json tags say what the JSON form drops).
Regenerate after bumping those modules:

    cd k8s/protogen && GOTOOLCHAIN=local GOFLAGS=-mod=mod go run . \
        > ../../src/edgeproxy/kube/prototables.py

Spec syntax (read by kube.protoschema): "<number> <jsonName><flags> <type>"
joined by "; ". Types: a scalar (string, bytes, bool, int32, int64, double,
json), a message name, [T] repeated, {T} map<string, T>, &T an embedded
struct JSON inlines. Flags: ? a Go pointer (written only when set, its zero
is data), ! a non-pointer field without omitempty (JSON keeps its zero),
~ omitzero (JSON drops the zero value, a struct too).
"""

from typing import Final

`)
	fmt.Fprintln(w, "# fmt: off")
	fmt.Fprintln(w, "SPECS: Final[dict[str, str]] = {")
	names := make([]string, 0, len(specs))
	for n := range specs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "    %q: %q,\n", n, specs[n])
	}
	fmt.Fprintln(w, "}")
	fmt.Fprintln(w, "\n# Named slices with a message of their own: {items: [...]} on the wire, a list in JSON.")
	fmt.Fprintln(w, "WRAPPERS: Final[frozenset[str]] = frozenset({")
	names = names[:0]
	for n := range wrappers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "    %q,\n", n)
	}
	fmt.Fprintln(w, "})")
	dump := func(title, decl string, m map[string]string) {
		fmt.Fprintln(w, "\n# "+title)
		fmt.Fprintln(w, decl+" = {")
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "    %s: %q,\n", k, m[k])
		}
		fmt.Fprintln(w, "}")
	}
	dump("(apiVersion, kind) -> message, for every built-in kind kube-apiserver serves in protobuf.",
		"KINDS: Final[dict[tuple[str, str], str]]", kinds)
	dump("meta.k8s.io kinds registered in every group version (Status, DeleteOptions, WatchEvent...).",
		"META_KINDS: Final[dict[str, str]]", meta)
	fmt.Fprintln(w, "# fmt: on")
}
