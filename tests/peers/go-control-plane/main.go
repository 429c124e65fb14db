// Command gcp-peer serves the same manifests directory as edgexds (Services, EndpointSlices
// and HealthProbes) as delta or state-of-the-world ADS through envoyproxy/go-control-plane,
// so edgexds-load can race the two on one machine with the same shape. It takes the
// command line edgexds-load starts a server with:
//
//	gcp-peer serve --manifests DIR --xds-addr HOST:PORT --admin-addr HOST:PORT [--debug-addr HOST:PORT] [--log-level LEVEL]
//
// Clusters and endpoints each live in a LinearCache, which go-control-plane's docs
// recommend for resources that change one at a time (EDS at scale): versions are per
// resource, and a delta watch is answered with the changed resources only. After a burst of
// file events (100 ms quiet, as edgexds's default debounce) the changed files are read
// again, everything is translated, and the caches get only the resources whose content
// changed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		log.Fatal("usage: gcp-peer serve --manifests DIR --xds-addr HOST:PORT --admin-addr HOST:PORT")
	}
	flags := flag.NewFlagSet("serve", flag.ExitOnError)
	manifests := flags.String("manifests", "", "directory of manifests")
	xdsAddr := flags.String("xds-addr", "127.0.0.1:18000", "xDS listen address")
	adminAddr := flags.String("admin-addr", "127.0.0.1:19000", "admin listen address (/readyz)")
	flags.String("log-level", "warn", "accepted for edgexds-load; the peer logs errors only")
	flags.String("debug-addr", "", "accepted for edgexds-load; the peer has no debug port")
	_ = flags.Parse(os.Args[2:])
	if *manifests == "" {
		log.Fatal("--manifests is required")
	}

	clusters := cache.NewLinearCache(resource.ClusterType)
	endpoints := cache.NewLinearCache(resource.EndpointType)
	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cache.Cache{resource.ClusterType: clusters, resource.EndpointType: endpoints},
	}
	state := &published{
		files: map[string][]object{}, clusters: map[string]types.Resource{}, endpoints: map[string]types.Resource{},
	}
	all, err := filepath.Glob(filepath.Join(*manifests, "*.yaml"))
	if err != nil {
		log.Fatal(err)
	}
	if err := state.load(all, clusters, endpoints); err != nil {
		log.Fatalf("loading %s: %v", *manifests, err)
	}
	var ready atomic.Bool
	ready.Store(true)
	go watch(*manifests, state, clusters, endpoints)

	go func() {
		admin := http.NewServeMux()
		admin.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if ready.Load() {
				fmt.Fprintln(w, "ready")
			} else {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		log.Fatal(http.ListenAndServe(*adminAddr, admin))
	}()

	xds := server.NewServer(context.Background(), mux, nil)
	grpcServer := grpc.NewServer(grpc.MaxConcurrentStreams(1 << 16))
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(grpcServer, xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(grpcServer, xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(grpcServer, xds)
	listener, err := net.Listen("tcp", *xdsAddr)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(grpcServer.Serve(listener))
}

// watch re-reads the files that changed, after each burst of changes.
func watch(dir string, state *published, clusters, endpoints *cache.LinearCache) {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		log.Fatal(err)
	}
	if err := watcher.Add(dir); err != nil {
		log.Fatal(err)
	}
	var quiet <-chan time.Time
	changed := map[string]bool{}
	for {
		select {
		case event, ok := <-watcher.Events:
			if !ok {
				return
			}
			if strings.HasSuffix(event.Name, ".yaml") {
				changed[event.Name] = true
			}
			quiet = time.After(100 * time.Millisecond)
		case err := <-watcher.Errors:
			log.Printf("watch: %v", err)
		case <-quiet:
			quiet = nil
			files := make([]string, 0, len(changed))
			for file := range changed {
				files = append(files, file)
			}
			changed = map[string]bool{}
			if err := state.load(files, clusters, endpoints); err != nil {
				log.Printf("keeping the last good state: %v", err)
			}
		}
	}
}

// published is what was read per file and what the caches hold, to hand them only what changed.
type published struct {
	files               map[string][]object
	clusters, endpoints map[string]types.Resource
}

// load re-reads `files` (a missing one is gone), translates everything, and updates the caches.
func (p *published) load(files []string, clusters, endpoints *cache.LinearCache) error {
	for _, file := range files {
		objects, err := readFile(file)
		if os.IsNotExist(err) {
			delete(p.files, file)
			continue
		}
		if err != nil {
			return err
		}
		p.files[file] = objects
	}
	var objects []object
	for _, list := range p.files {
		objects = append(objects, list...)
	}
	newClusters, newEndpoints := translate(objects)
	if err := update(clusters, p.clusters, newClusters); err != nil {
		return err
	}
	if err := update(endpoints, p.endpoints, newEndpoints); err != nil {
		return err
	}
	p.clusters, p.endpoints = newClusters, newEndpoints
	return nil
}

func update(c *cache.LinearCache, old, fresh map[string]types.Resource) error {
	changed := map[string]types.Resource{}
	for name, r := range fresh {
		if before, ok := old[name]; !ok || !proto.Equal(before, r) {
			changed[name] = r
		}
	}
	var deleted []string
	for name := range old {
		if _, ok := fresh[name]; !ok {
			deleted = append(deleted, name)
		}
	}
	if len(changed) == 0 && len(deleted) == 0 {
		return nil
	}
	return c.UpdateResources(changed, deleted)
}

// The parts of Services, EndpointSlices and HealthProbes the translation reads.
type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Ports []struct {
			Name string `json:"name"`
			Port int32  `json:"port"`
		} `json:"ports"`
		TargetRef struct {
			Name string `json:"name"`
		} `json:"targetRef"`
		IntervalMs       uint32 `json:"intervalMs"`
		FailureThreshold uint32 `json:"failureThreshold"`
		Overrides        []struct {
			Match struct {
				Zone string `json:"zone"`
			} `json:"match"`
			IntervalMs uint32 `json:"intervalMs"`
		} `json:"overrides"`
	} `json:"spec"`
	Ports []struct {
		Name string `json:"name"`
		Port uint32 `json:"port"`
	} `json:"ports"`
	Endpoints []struct {
		Addresses  []string `json:"addresses"`
		Conditions struct {
			Ready *bool `json:"ready"`
		} `json:"conditions"`
		Zone string `json:"zone"`
	} `json:"endpoints"`
}

func readFile(file string) ([]object, error) {
	text, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var objects []object
	for _, document := range strings.Split(string(text), "\n---") {
		if strings.TrimSpace(document) == "" {
			continue
		}
		var o object
		if err := yaml.Unmarshal([]byte(document), &o); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if o.Metadata.Namespace == "" {
			o.Metadata.Namespace = "default"
		}
		objects = append(objects, o)
	}
	return objects, nil
}

// translate builds what edgexds builds for the same input: an EDS cluster per Service
// port, named svc.ns:port, and its endpoints grouped by zone, each with the probe values
// in its "edgexds" metadata.
func translate(objects []object) (map[string]types.Resource, map[string]types.Resource) {
	probes := map[string]object{}
	for _, o := range objects {
		if o.Kind == "HealthProbe" {
			probes[o.Metadata.Namespace+"/"+o.Spec.TargetRef.Name] = o
		}
	}
	clusters, endpoints := map[string]types.Resource{}, map[string]types.Resource{}
	for _, service := range objects {
		if service.Kind != "Service" {
			continue
		}
		ns := service.Metadata.Namespace
		probe, probed := probes[ns+"/"+service.Metadata.Name]
		for _, port := range service.Spec.Ports {
			name := fmt.Sprintf("%s.%s:%d", service.Metadata.Name, ns, port.Port)
			clusters[name] = &clusterpb.Cluster{
				Name:                 name,
				ClusterDiscoveryType: &clusterpb.Cluster_Type{Type: clusterpb.Cluster_EDS},
				EdsClusterConfig: &clusterpb.Cluster_EdsClusterConfig{
					EdsConfig: &corepb.ConfigSource{
						ResourceApiVersion:    corepb.ApiVersion_V3,
						ConfigSourceSpecifier: &corepb.ConfigSource_Ads{Ads: &corepb.AggregatedConfigSource{}},
					},
					ServiceName: name,
				},
			}
			byZone := map[string][]*endpointpb.LbEndpoint{}
			var zones []string
			for _, slice := range objects {
				if slice.Kind != "EndpointSlice" || slice.Metadata.Namespace != ns ||
					slice.Metadata.Labels["kubernetes.io/service-name"] != service.Metadata.Name {
					continue
				}
				for _, slicePort := range slice.Ports {
					if slicePort.Name != port.Name {
						continue
					}
					for _, e := range slice.Endpoints {
						if (e.Conditions.Ready != nil && !*e.Conditions.Ready) || len(e.Addresses) == 0 {
							continue
						}
						if _, seen := byZone[e.Zone]; !seen {
							zones = append(zones, e.Zone)
						}
						byZone[e.Zone] = append(byZone[e.Zone], lbEndpoint(e.Addresses[0], slicePort.Port, e.Zone, probe, probed))
					}
				}
			}
			assignment := &endpointpb.ClusterLoadAssignment{ClusterName: name}
			for _, zone := range zones {
				assignment.Endpoints = append(assignment.Endpoints, &endpointpb.LocalityLbEndpoints{
					Locality:            &corepb.Locality{Zone: zone},
					LbEndpoints:         byZone[zone],
					LoadBalancingWeight: wrapperspb.UInt32(uint32(len(byZone[zone]))),
				})
			}
			endpoints[name] = assignment
		}
	}
	return clusters, endpoints
}

func lbEndpoint(address string, port uint32, zone string, probe object, probed bool) *endpointpb.LbEndpoint {
	e := &endpointpb.LbEndpoint{
		HostIdentifier: &endpointpb.LbEndpoint_Endpoint{Endpoint: &endpointpb.Endpoint{
			Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
				Address: address, PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: port},
			}}},
		}},
		HealthStatus: corepb.HealthStatus_HEALTHY,
	}
	if !probed {
		return e
	}
	interval := probe.Spec.IntervalMs
	if interval == 0 {
		interval = 10000
	}
	for _, o := range probe.Spec.Overrides {
		if o.Match.Zone == zone && o.IntervalMs != 0 {
			interval = o.IntervalMs
		}
	}
	failures := probe.Spec.FailureThreshold
	if failures == 0 {
		failures = 3
	}
	fields, _ := structpb.NewStruct(map[string]any{
		"probe":             probe.Metadata.Namespace + "/" + probe.Metadata.Name,
		"probe_interval_ms": float64(interval),
		"failure_threshold": float64(failures),
		"success_threshold": float64(1),
		"timeout_ms":        float64(1000),
	})
	e.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{"edgexds": fields}}
	return e
}
