// Command grpc-go-client makes one gRPC call the way a grpc-go app does: grpc.NewClient with
// the default resolver, so with HTTPS_PROXY set (as the sidecar injector sets it) grpc-go
// reaches the target through an HTTP CONNECT tunnel to the proxy, the target's name left for
// the proxy to resolve. It calls /test.Greeter/Who and prints the answer (the pod's name).
//
//	HTTPS_PROXY=http://127.0.0.1:15001 grpc-go-client web.shop:80
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
)

// raw passes message bytes through untouched: the test upstream's method takes and returns
// bytes, not a protobuf of ours.
type raw struct{}

func (raw) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (raw) Name() string { return "raw" }

var _ encoding.Codec = raw{}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: grpc-go-client host:port")
		os.Exit(2)
	}
	conn, err := grpc.NewClient(os.Args[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	request, reply := []byte{}, []byte{}
	if err := conn.Invoke(ctx, "/test.Greeter/Who", &request, &reply, grpc.ForceCodec(raw{})); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println(string(reply))
}
