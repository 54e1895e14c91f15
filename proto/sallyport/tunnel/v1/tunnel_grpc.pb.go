// The Sallyport tunnel protocol, version 4.
//
// Protocol flow
//
//   1. The agent dials the gateway's tunnel listener (mutual TLS 1.3 with the
//      client certificate it got from EnrollmentService, see enroll.proto) and
//      opens one Control stream with a ControlRequest{hello} as the first
//      message.
//   2. The gateway derives the connector and its group from the verified
//      client certificate, checks that the connector is not revoked, and
//      answers ControlResponse{welcome} with a session id. A missing or
//      unknown certificate ends the stream with UNAUTHENTICATED, a revoked
//      connector with PERMISSION_DENIED ("revoked: …"); a certificate of
//      another CA or an expired one fails the TLS handshake. (Older agents
//      sent a token as `authorization: Bearer` metadata; it is ignored.)
//      The welcome names the gateway replica and how many are alive
//      (Welcome.replica, Welcome.replicas): an agent whose new session
//      shares a replica with another of its sessions while some replica
//      has none drains it at once and dials again, a bounded number of
//      times, so that every replica holds a session of its group. The
//      hello says how many sessions the agent keeps (Hello.connections): at
//      each store sweep a replica holding more than its share of them
//      sends one a Drain ("rebalancing over N replicas"), so that a
//      replica that joins later gets sessions too.
//   3. The agent opens Exchange streams carrying `sallyport-session: <id>`
//      metadata and keeps a few of them idle. The gateway puts each idle
//      stream in the session's pool; a new HTTP exchange takes one without
//      waiting for the network, so a warm session adds no round trip.
//   4. One exchange on a stream, in order:
//        gateway → agent: Frame{request head [+ body] [+ end]}, then
//                         Frame{data}… and Frame{end [+ trailers]}
//        agent → gateway: Frame{response head [+ body] [+ end]}, then
//                         Frame{data}… and Frame{end [+ trailers]}
//                         or Frame{error} at any point instead.
//      A small exchange is therefore one message each way.
//      Held-back body (version 2, both peers): a request with
//      `Expect: 100-continue` and a body goes as Frame{request head with
//      expect_continue}, without body or end. The agent answers
//      Frame{send_body} when the backend's client first reads the request
//      body (after the backend's 100 Continue, or when the client stopped
//      waiting for one), and only then does the gateway read the client's
//      body and send it as above. A response head that comes without a
//      send_body before it means the backend answered without the body:
//      the gateway never sends it and resets the stream after the
//      response. The gateway sets expect_continue only for agents that
//      said protocol_version >= 2 in Hello; the agent sends send_body only
//      in answer to it, at most once, and before its response head.
//      Informational responses (version 3, both peers): when the request
//      head has `informational`, the agent relays each informational
//      response of the backend (status 102–199 but 101: 103 Early Hints,
//      102 Processing, …) as Frame{informational}, alone in its frame,
//      before its response head: at most 8 of them per exchange, with at
//      most 64 KiB of header fields in all (name and value bytes plus 4
//      per field); a backend that sends more fails the exchange with
//      Frame{error}. 100 Continue is never relayed: the gateway's own
//      HTTP server answers Expect. The gateway sets `informational` only
//      for agents that said protocol_version >= 3 and only for clients
//      that may receive informational responses (not HTTP/1.0, not
//      upgrades); it refuses an informational frame it did not ask for,
//      one past either limit, or one after the response head as
//      malformed.
//      When both sides have sent `end` (and no error), the stream is idle
//      again and may carry the next exchange. Anything else (cancellation,
//      error, upgrade) resets the stream, and the agent opens a fresh one.
//   5. Upgraded exchanges (101 Switching Protocols, e.g. WebSocket) carry raw
//      bytes in `data` both ways after the response head; `end` is a
//      half-close. The stream is not reused afterwards.
//   6. The agent sends ControlRequest{drain} before it exits; the gateway
//      sends it no new exchanges and lets the in-flight ones finish.
//      The gateway sends ControlResponse{drain}, never before the welcome,
//      when it will end the session (it shuts down, or the session's
//      certificate expires soon). The session goes on serving; the agent
//      opens a replacement session first and then drains this one as
//      above. A gateway that shuts down refuses new sessions: UNAVAILABLE
//      "shutting down: …" (QUIC and yamux: error code "shutting-down"),
//      so that behind a load balancer the replacement reaches another
//      replica; the agent retries with backoff. A gateway that cannot check
//      the agent because its database does not answer refuses the session
//      with UNAVAILABLE "unavailable: …" (QUIC and yamux, to agents of
//      version 4: error code "unavailable"); the words begin with "the
//      gateway's database does not answer". The agent retries with backoff
//      and is not told to enroll again.
//
// QUIC and yamux (muxed transports, package tunnel/muxtunnel)
//
//   The same messages travel on a connection where either side may open
//   streams: QUIC on UDP at the tunnel port number (ALPN "sallyport-quic/1"),
//   or yamux inside TLS on the tunnel TCP port (ALPN "sallyport-yamux/1";
//   "h2" on the same port is gRPC). Every message is a 4-byte big-endian
//   length followed by the protobuf encoding; a Frame is at most 1 MiB and
//   a control message at most 64 KiB.
//   M1. The agent opens the first stream, the control stream, and sends
//       ControlRequest{hello} with Hello.token set (there is no request
//       metadata). The agent opens no other stream.
//   M2. The gateway answers ControlResponse{welcome}, or
//       ControlResponse{error{code}} and closes the connection: code
//       "unauthenticated", "revoked", "shutting-down", "closed" (closed as
//       it registered) or, to agents of version 4, "unavailable" (step 6).
//       No hello within 10 s also closes it.
//   M3. The gateway opens one fresh stream per exchange and writes the
//       request frame at once: no pool and no added round trip. The
//       exchange runs as in step 4; when both sides have sent `end`, each
//       side closes its sending direction. A stream carries one exchange.
//       A reset (QUIC RESET_STREAM/STOP_SENDING; on yamux, the stream ends
//       before the peer's `end`) aborts the exchange.
//   M4. The agent's ControlRequest{drain} stops new exchanges; the gateway,
//       which opened every stream and so knows when none is left, closes
//       the connection once the exchanges in flight are over. The gateway's
//       ControlResponse{drain} announces that it will end the session, as
//       in step 6. The session lives as long as the control stream.
//
// Compatibility: fields are only ever added. A Frame with no field this peer
// knows is skipped, so old and new peers interoperate; `protocol_version` in
// Hello/Welcome says which features the peer has.
//
// Changelog
//   1 — first version. Hello.token and ControlResponse.error were added
//       with the QUIC and yamux transports; gRPC peers never set them.
//   2 — RequestHead.expect_continue and Frame.send_body: the body of a
//       request with `Expect: 100-continue` waits until the backend asks
//       for it (step 4). A version 2 gateway talks to a version 1 agent as
//       before (it never sets expect_continue), and a version 1 gateway
//       never sets it either, so a version 2 agent never sends send_body
//       to it.
//   3 — RequestHead.informational and Frame.informational: the backend's
//       informational (1xx) responses reach the client before the final
//       one (step 4). A version 3 gateway asks only agents of version 3;
//       a version 2 gateway never asks, so a version 3 agent sends it none
//       (it drops them, as before).
//   4 — QUIC and yamux error code "unavailable": the gateway's database
//       does not answer (step 6). Agents of version 3 and before take an
//       unknown code for a failed transport (transport auto: QUIC → gRPC),
//       so a version 4 gateway refuses them "unauthenticated" with the same
//       words, which they recognise. gRPC answers UNAVAILABLE "unavailable:
//       …" to every agent (older ones read the words).
//   Not a version: the strings of Header, RequestHead, ResponseHead and
//       Error are no longer checked for UTF-8 (utf8_validation NONE, the
//       same wire format). A peer from before rejects a frame that carries
//       such bytes, and so fails that one exchange, as the sender itself
//       did before (it refused to encode the frame).

// Code generated by protoc-gen-go-grpc. DO NOT EDIT.
// versions:
// - protoc-gen-go-grpc v1.6.2
// - protoc             (unknown)
// source: sallyport/tunnel/v1/tunnel.proto

package tunnelv1

import (
	context "context"
	grpc "google.golang.org/grpc"
	codes "google.golang.org/grpc/codes"
	status "google.golang.org/grpc/status"
)

// This is a compile-time assertion to ensure that this generated file
// is compatible with the grpc package it is being compiled against.
// Requires gRPC-Go v1.64.0 or later.
const _ = grpc.SupportPackageIsVersion9

const (
	TunnelService_Control_FullMethodName  = "/sallyport.tunnel.v1.TunnelService/Control"
	TunnelService_Exchange_FullMethodName = "/sallyport.tunnel.v1.TunnelService/Exchange"
)

// TunnelServiceClient is the client API for TunnelService service.
//
// For semantics around ctx use and closing/ending streaming RPCs, please refer to https://pkg.go.dev/google.golang.org/grpc/?tab=doc#ClientConn.NewStream.
//
// TunnelService is served by the gateway and called by agents, which dial
// out so that no inbound port opens on the private side.
type TunnelServiceClient interface {
	// Control is the session's first stream: authentication, session settings
	// and draining. The session lives as long as this stream.
	Control(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[ControlRequest, ControlResponse], error)
	// Exchange carries HTTP exchanges one after another. Both directions carry
	// the same Frame message, which keeps the framing identical on transports
	// that are not gRPC (QUIC, yamux); see buf.yaml for the lint exception.
	Exchange(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[Frame, Frame], error)
}

type tunnelServiceClient struct {
	cc grpc.ClientConnInterface
}

func NewTunnelServiceClient(cc grpc.ClientConnInterface) TunnelServiceClient {
	return &tunnelServiceClient{cc}
}

func (c *tunnelServiceClient) Control(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[ControlRequest, ControlResponse], error) {
	cOpts := append([]grpc.CallOption{grpc.StaticMethod()}, opts...)
	stream, err := c.cc.NewStream(ctx, &TunnelService_ServiceDesc.Streams[0], TunnelService_Control_FullMethodName, cOpts...)
	if err != nil {
		return nil, err
	}
	x := &grpc.GenericClientStream[ControlRequest, ControlResponse]{ClientStream: stream}
	return x, nil
}

// This type alias is provided for backwards compatibility with existing code that references the prior non-generic stream type by name.
type TunnelService_ControlClient = grpc.BidiStreamingClient[ControlRequest, ControlResponse]

func (c *tunnelServiceClient) Exchange(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[Frame, Frame], error) {
	cOpts := append([]grpc.CallOption{grpc.StaticMethod()}, opts...)
	stream, err := c.cc.NewStream(ctx, &TunnelService_ServiceDesc.Streams[1], TunnelService_Exchange_FullMethodName, cOpts...)
	if err != nil {
		return nil, err
	}
	x := &grpc.GenericClientStream[Frame, Frame]{ClientStream: stream}
	return x, nil
}

// This type alias is provided for backwards compatibility with existing code that references the prior non-generic stream type by name.
type TunnelService_ExchangeClient = grpc.BidiStreamingClient[Frame, Frame]

// TunnelServiceServer is the server API for TunnelService service.
// All implementations must embed UnimplementedTunnelServiceServer
// for forward compatibility.
//
// TunnelService is served by the gateway and called by agents, which dial
// out so that no inbound port opens on the private side.
type TunnelServiceServer interface {
	// Control is the session's first stream: authentication, session settings
	// and draining. The session lives as long as this stream.
	Control(grpc.BidiStreamingServer[ControlRequest, ControlResponse]) error
	// Exchange carries HTTP exchanges one after another. Both directions carry
	// the same Frame message, which keeps the framing identical on transports
	// that are not gRPC (QUIC, yamux); see buf.yaml for the lint exception.
	Exchange(grpc.BidiStreamingServer[Frame, Frame]) error
	mustEmbedUnimplementedTunnelServiceServer()
}

// UnimplementedTunnelServiceServer must be embedded to have
// forward compatible implementations.
//
// NOTE: this should be embedded by value instead of pointer to avoid a nil
// pointer dereference when methods are called.
type UnimplementedTunnelServiceServer struct{}

func (UnimplementedTunnelServiceServer) Control(grpc.BidiStreamingServer[ControlRequest, ControlResponse]) error {
	return status.Error(codes.Unimplemented, "method Control not implemented")
}
func (UnimplementedTunnelServiceServer) Exchange(grpc.BidiStreamingServer[Frame, Frame]) error {
	return status.Error(codes.Unimplemented, "method Exchange not implemented")
}
func (UnimplementedTunnelServiceServer) mustEmbedUnimplementedTunnelServiceServer() {}
func (UnimplementedTunnelServiceServer) testEmbeddedByValue()                       {}

// UnsafeTunnelServiceServer may be embedded to opt out of forward compatibility for this service.
// Use of this interface is not recommended, as added methods to TunnelServiceServer will
// result in compilation errors.
type UnsafeTunnelServiceServer interface {
	mustEmbedUnimplementedTunnelServiceServer()
}

func RegisterTunnelServiceServer(s grpc.ServiceRegistrar, srv TunnelServiceServer) {
	// If the following call panics, it indicates UnimplementedTunnelServiceServer was
	// embedded by pointer and is nil.  This will cause panics if an
	// unimplemented method is ever invoked, so we test this at initialization
	// time to prevent it from happening at runtime later due to I/O.
	if t, ok := srv.(interface{ testEmbeddedByValue() }); ok {
		t.testEmbeddedByValue()
	}
	s.RegisterService(&TunnelService_ServiceDesc, srv)
}

func _TunnelService_Control_Handler(srv interface{}, stream grpc.ServerStream) error {
	return srv.(TunnelServiceServer).Control(&grpc.GenericServerStream[ControlRequest, ControlResponse]{ServerStream: stream})
}

// This type alias is provided for backwards compatibility with existing code that references the prior non-generic stream type by name.
type TunnelService_ControlServer = grpc.BidiStreamingServer[ControlRequest, ControlResponse]

func _TunnelService_Exchange_Handler(srv interface{}, stream grpc.ServerStream) error {
	return srv.(TunnelServiceServer).Exchange(&grpc.GenericServerStream[Frame, Frame]{ServerStream: stream})
}

// This type alias is provided for backwards compatibility with existing code that references the prior non-generic stream type by name.
type TunnelService_ExchangeServer = grpc.BidiStreamingServer[Frame, Frame]

// TunnelService_ServiceDesc is the grpc.ServiceDesc for TunnelService service.
// It's only intended for direct use with grpc.RegisterService,
// and not to be introspected or modified (even as a copy)
var TunnelService_ServiceDesc = grpc.ServiceDesc{
	ServiceName: "sallyport.tunnel.v1.TunnelService",
	HandlerType: (*TunnelServiceServer)(nil),
	Methods:     []grpc.MethodDesc{},
	Streams: []grpc.StreamDesc{
		{
			StreamName:    "Control",
			Handler:       _TunnelService_Control_Handler,
			ServerStreams: true,
			ClientStreams: true,
		},
		{
			StreamName:    "Exchange",
			Handler:       _TunnelService_Exchange_Handler,
			ServerStreams: true,
			ClientStreams: true,
		},
	},
	Metadata: "sallyport/tunnel/v1/tunnel.proto",
}
