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

// Code generated by protoc-gen-go. DO NOT EDIT.
// versions:
// 	protoc-gen-go v1.36.12
// 	protoc        (unknown)
// source: sallyport/tunnel/v1/tunnel.proto

package tunnelv1

import (
	protoreflect "google.golang.org/protobuf/reflect/protoreflect"
	protoimpl "google.golang.org/protobuf/runtime/protoimpl"
	reflect "reflect"
	sync "sync"
	unsafe "unsafe"
)

const (
	// Verify that this generated code is sufficiently up-to-date.
	_ = protoimpl.EnforceVersion(20 - protoimpl.MinVersion)
	// Verify that runtime/protoimpl is sufficiently up-to-date.
	_ = protoimpl.EnforceVersion(protoimpl.MaxVersion - 20)
)

// ControlRequest is a message from the agent on the Control stream.
type ControlRequest struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// First message: who the agent is.
	Hello *Hello `protobuf:"bytes,1,opt,name=hello" json:"hello,omitempty"`
	// The agent is shutting down: send it no new exchanges.
	Drain         *Drain `protobuf:"bytes,2,opt,name=drain" json:"drain,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *ControlRequest) Reset() {
	*x = ControlRequest{}
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[0]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *ControlRequest) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*ControlRequest) ProtoMessage() {}

func (x *ControlRequest) ProtoReflect() protoreflect.Message {
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[0]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use ControlRequest.ProtoReflect.Descriptor instead.
func (*ControlRequest) Descriptor() ([]byte, []int) {
	return file_sallyport_tunnel_v1_tunnel_proto_rawDescGZIP(), []int{0}
}

func (x *ControlRequest) GetHello() *Hello {
	if x != nil {
		return x.Hello
	}
	return nil
}

func (x *ControlRequest) GetDrain() *Drain {
	if x != nil {
		return x.Drain
	}
	return nil
}

// ControlResponse is a message from the gateway on the Control stream.
type ControlResponse struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Answer to hello: the session is accepted.
	Welcome *Welcome `protobuf:"bytes,1,opt,name=welcome" json:"welcome,omitempty"`
	// The gateway will end this session (it shuts down, or the session's
	// certificate expires soon): the agent should open a replacement session,
	// then drain this one.
	Drain *Drain `protobuf:"bytes,2,opt,name=drain" json:"drain,omitempty"`
	// QUIC and yamux: the session is refused (code "unauthenticated" for a
	// wrong or missing token, "unavailable" when the gateway's database does
	// not answer: see M2); the gateway closes the connection after it.
	Error         *Error `protobuf:"bytes,3,opt,name=error" json:"error,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *ControlResponse) Reset() {
	*x = ControlResponse{}
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[1]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *ControlResponse) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*ControlResponse) ProtoMessage() {}

func (x *ControlResponse) ProtoReflect() protoreflect.Message {
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[1]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use ControlResponse.ProtoReflect.Descriptor instead.
func (*ControlResponse) Descriptor() ([]byte, []int) {
	return file_sallyport_tunnel_v1_tunnel_proto_rawDescGZIP(), []int{1}
}

func (x *ControlResponse) GetWelcome() *Welcome {
	if x != nil {
		return x.Welcome
	}
	return nil
}

func (x *ControlResponse) GetDrain() *Drain {
	if x != nil {
		return x.Drain
	}
	return nil
}

func (x *ControlResponse) GetError() *Error {
	if x != nil {
		return x.Error
	}
	return nil
}

// Hello describes the agent.
type Hello struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Highest protocol version the agent speaks (4; 3 before the error code
	// "unavailable", 2 before informational, 1 before expect_continue).
	ProtocolVersion uint32 `protobuf:"varint,1,opt,name=protocol_version,json=protocolVersion" json:"protocol_version,omitempty"`
	// Agent name shown in logs (defaults to the host name).
	Name string `protobuf:"bytes,2,opt,name=name" json:"name,omitempty"`
	// Agent build version.
	Version string `protobuf:"bytes,3,opt,name=version" json:"version,omitempty"`
	// Operating system and architecture, e.g. "linux/amd64".
	Platform string `protobuf:"bytes,4,opt,name=platform" json:"platform,omitempty"`
	// Transport of this session: "grpc", "quic" or "yamux".
	Transport string `protobuf:"bytes,5,opt,name=transport" json:"transport,omitempty"`
	// Stable id of the agent process; all its sessions share it.
	AgentId string `protobuf:"bytes,6,opt,name=agent_id,json=agentId" json:"agent_id,omitempty"`
	// The agent credential on QUIC and yamux, which have no request metadata
	// (gRPC sends it as `authorization: Bearer` metadata instead). Never logged.
	Token string `protobuf:"bytes,7,opt,name=token" json:"token,omitempty"`
	// Number of sessions the agent keeps (its `connections` setting), the same
	// in every Hello of the agent. At each store sweep a gateway replica that
	// holds more than ceil(connections / replicas) of the agent's sessions
	// drains one, so that a replica that joined later (a rolling restart)
	// gets its share. 0 means unknown (older agents): never rebalanced.
	Connections   uint32 `protobuf:"varint,8,opt,name=connections" json:"connections,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *Hello) Reset() {
	*x = Hello{}
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[2]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Hello) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Hello) ProtoMessage() {}

func (x *Hello) ProtoReflect() protoreflect.Message {
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[2]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Hello.ProtoReflect.Descriptor instead.
func (*Hello) Descriptor() ([]byte, []int) {
	return file_sallyport_tunnel_v1_tunnel_proto_rawDescGZIP(), []int{2}
}

func (x *Hello) GetProtocolVersion() uint32 {
	if x != nil {
		return x.ProtocolVersion
	}
	return 0
}

func (x *Hello) GetName() string {
	if x != nil {
		return x.Name
	}
	return ""
}

func (x *Hello) GetVersion() string {
	if x != nil {
		return x.Version
	}
	return ""
}

func (x *Hello) GetPlatform() string {
	if x != nil {
		return x.Platform
	}
	return ""
}

func (x *Hello) GetTransport() string {
	if x != nil {
		return x.Transport
	}
	return ""
}

func (x *Hello) GetAgentId() string {
	if x != nil {
		return x.AgentId
	}
	return ""
}

func (x *Hello) GetToken() string {
	if x != nil {
		return x.Token
	}
	return ""
}

func (x *Hello) GetConnections() uint32 {
	if x != nil {
		return x.Connections
	}
	return 0
}

// Welcome accepts a session.
type Welcome struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Highest protocol version the gateway speaks. The session uses the
	// lower of this and Hello.protocol_version.
	ProtocolVersion uint32 `protobuf:"varint,1,opt,name=protocol_version,json=protocolVersion" json:"protocol_version,omitempty"`
	// Session id to put in `sallyport-session` metadata on Exchange streams.
	SessionId string `protobuf:"bytes,2,opt,name=session_id,json=sessionId" json:"session_id,omitempty"`
	// Connector group decided by the agent's credential.
	Group string `protobuf:"bytes,3,opt,name=group" json:"group,omitempty"`
	// Most streams the gateway accepts on this session (idle and busy).
	MaxStreams uint32 `protobuf:"varint,4,opt,name=max_streams,json=maxStreams" json:"max_streams,omitempty"`
	// Id of the gateway replica that accepted the session: random per
	// gateway process, the same for all its sessions. Empty from gateways
	// that predate it.
	Replica string `protobuf:"bytes,5,opt,name=replica" json:"replica,omitempty"`
	// Number of gateway replicas alive on the gateway's store (1 with a
	// SQLite store; those seen within the last three store sweeps with
	// PostgreSQL). An agent whose sessions share a replica while another
	// replica has none re-dials until they cover min(replicas, connections)
	// replicas, since a replica that holds no session of a group answers its
	// users 503. 0 means unknown (older gateways): the agent does nothing
	// new.
	Replicas      uint32 `protobuf:"varint,6,opt,name=replicas" json:"replicas,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *Welcome) Reset() {
	*x = Welcome{}
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[3]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Welcome) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Welcome) ProtoMessage() {}

func (x *Welcome) ProtoReflect() protoreflect.Message {
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[3]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Welcome.ProtoReflect.Descriptor instead.
func (*Welcome) Descriptor() ([]byte, []int) {
	return file_sallyport_tunnel_v1_tunnel_proto_rawDescGZIP(), []int{3}
}

func (x *Welcome) GetProtocolVersion() uint32 {
	if x != nil {
		return x.ProtocolVersion
	}
	return 0
}

func (x *Welcome) GetSessionId() string {
	if x != nil {
		return x.SessionId
	}
	return ""
}

func (x *Welcome) GetGroup() string {
	if x != nil {
		return x.Group
	}
	return ""
}

func (x *Welcome) GetMaxStreams() uint32 {
	if x != nil {
		return x.MaxStreams
	}
	return 0
}

func (x *Welcome) GetReplica() string {
	if x != nil {
		return x.Replica
	}
	return ""
}

func (x *Welcome) GetReplicas() uint32 {
	if x != nil {
		return x.Replicas
	}
	return 0
}

// Drain announces an orderly shutdown of the sender.
type Drain struct {
	state         protoimpl.MessageState `protogen:"open.v1"`
	Reason        string                 `protobuf:"bytes,1,opt,name=reason" json:"reason,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *Drain) Reset() {
	*x = Drain{}
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[4]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Drain) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Drain) ProtoMessage() {}

func (x *Drain) ProtoReflect() protoreflect.Message {
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[4]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Drain.ProtoReflect.Descriptor instead.
func (*Drain) Descriptor() ([]byte, []int) {
	return file_sallyport_tunnel_v1_tunnel_proto_rawDescGZIP(), []int{4}
}

func (x *Drain) GetReason() string {
	if x != nil {
		return x.Reason
	}
	return ""
}

// Frame is one message of an exchange, in either direction. Several fields
// may be set at once: head, data and end together make a whole small
// exchange one message.
type Frame struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Gateway → agent, first frame of an exchange.
	Request *RequestHead `protobuf:"bytes,1,opt,name=request" json:"request,omitempty"`
	// Agent → gateway, first frame of a response.
	Response *ResponseHead `protobuf:"bytes,2,opt,name=response" json:"response,omitempty"`
	// Body bytes (after the head, or in the same frame).
	Data []byte `protobuf:"bytes,3,opt,name=data" json:"data,omitempty"`
	// The sender's side of the exchange is complete.
	End bool `protobuf:"varint,4,opt,name=end" json:"end,omitempty"`
	// Trailers, only together with end.
	Trailers []*Header `protobuf:"bytes,5,rep,name=trailers" json:"trailers,omitempty"`
	// Agent → gateway: the exchange failed; ends the exchange.
	Error *Error `protobuf:"bytes,6,opt,name=error" json:"error,omitempty"`
	// Agent → gateway, version 2: the backend asked for the request body
	// that the gateway holds back (RequestHead.expect_continue): send it.
	// Alone in its frame, at most once, before the response head.
	SendBody bool `protobuf:"varint,7,opt,name=send_body,json=sendBody" json:"send_body,omitempty"`
	// Agent → gateway, version 3: an informational response of the backend
	// (status 102–199 but 101, and its headers; no content_length or
	// trailer_names), asked for by RequestHead.informational. Alone in its
	// frame, before the response head; bounded as step 4 says.
	Informational *ResponseHead `protobuf:"bytes,8,opt,name=informational" json:"informational,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *Frame) Reset() {
	*x = Frame{}
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[5]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Frame) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Frame) ProtoMessage() {}

func (x *Frame) ProtoReflect() protoreflect.Message {
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[5]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Frame.ProtoReflect.Descriptor instead.
func (*Frame) Descriptor() ([]byte, []int) {
	return file_sallyport_tunnel_v1_tunnel_proto_rawDescGZIP(), []int{5}
}

func (x *Frame) GetRequest() *RequestHead {
	if x != nil {
		return x.Request
	}
	return nil
}

func (x *Frame) GetResponse() *ResponseHead {
	if x != nil {
		return x.Response
	}
	return nil
}

func (x *Frame) GetData() []byte {
	if x != nil {
		return x.Data
	}
	return nil
}

func (x *Frame) GetEnd() bool {
	if x != nil {
		return x.End
	}
	return false
}

func (x *Frame) GetTrailers() []*Header {
	if x != nil {
		return x.Trailers
	}
	return nil
}

func (x *Frame) GetError() *Error {
	if x != nil {
		return x.Error
	}
	return nil
}

func (x *Frame) GetSendBody() bool {
	if x != nil {
		return x.SendBody
	}
	return false
}

func (x *Frame) GetInformational() *ResponseHead {
	if x != nil {
		return x.Informational
	}
	return nil
}

// Header is one header field with all its values, in order.
type Header struct {
	state         protoimpl.MessageState `protogen:"open.v1"`
	Name          string                 `protobuf:"bytes,1,opt,name=name" json:"name,omitempty"`
	Values        []string               `protobuf:"bytes,2,rep,name=values" json:"values,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *Header) Reset() {
	*x = Header{}
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[6]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Header) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Header) ProtoMessage() {}

func (x *Header) ProtoReflect() protoreflect.Message {
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[6]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Header.ProtoReflect.Descriptor instead.
func (*Header) Descriptor() ([]byte, []int) {
	return file_sallyport_tunnel_v1_tunnel_proto_rawDescGZIP(), []int{6}
}

func (x *Header) GetName() string {
	if x != nil {
		return x.Name
	}
	return ""
}

func (x *Header) GetValues() []string {
	if x != nil {
		return x.Values
	}
	return nil
}

// RequestHead is the request as the backend must receive it.
type RequestHead struct {
	state  protoimpl.MessageState `protogen:"open.v1"`
	Method string                 `protobuf:"bytes,1,opt,name=method" json:"method,omitempty"`
	// "http" or "https": how the agent reaches the backend.
	Scheme string `protobuf:"bytes,2,opt,name=scheme" json:"scheme,omitempty"`
	// Backend host:port to dial (checked against the agent's allow list).
	Authority string `protobuf:"bytes,3,opt,name=authority" json:"authority,omitempty"`
	// Escaped path and query, e.g. "/a%2Fb?x=1".
	Path string `protobuf:"bytes,4,opt,name=path" json:"path,omitempty"`
	// Host header to send (the backend's own, or the client's when preserved).
	Host    string    `protobuf:"bytes,5,opt,name=host" json:"host,omitempty"`
	Headers []*Header `protobuf:"bytes,6,rep,name=headers" json:"headers,omitempty"`
	// Body length in bytes; -1 when unknown (streamed).
	ContentLength int64 `protobuf:"varint,7,opt,name=content_length,json=contentLength" json:"content_length,omitempty"`
	// Trailer names the client announced.
	TrailerNames []string `protobuf:"bytes,8,rep,name=trailer_names,json=trailerNames" json:"trailer_names,omitempty"`
	// Speak HTTP/2 to the backend (h2c for http://) even without gRPC.
	BackendHttp2 bool `protobuf:"varint,9,opt,name=backend_http2,json=backendHttp2" json:"backend_http2,omitempty"`
	// Gateway app name, for the agent's logs.
	App string `protobuf:"bytes,10,opt,name=app" json:"app,omitempty"`
	// Request id, for the agent's logs.
	RequestId string `protobuf:"bytes,11,opt,name=request_id,json=requestId" json:"request_id,omitempty"`
	// Version 2: the client sent `Expect: 100-continue`, and the gateway
	// holds the body back until the agent answers Frame{send_body} (see step
	// 4). Only with a body to come, for agents of version 2 or later.
	ExpectContinue bool `protobuf:"varint,12,opt,name=expect_continue,json=expectContinue" json:"expect_continue,omitempty"`
	// Version 3: the gateway relays the backend's informational responses
	// (103 Early Hints, …) to its client: the agent may send
	// Frame{informational} before the response head (see step 4). Only for
	// agents of version 3 or later and clients that can receive them.
	Informational bool `protobuf:"varint,13,opt,name=informational" json:"informational,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *RequestHead) Reset() {
	*x = RequestHead{}
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[7]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *RequestHead) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*RequestHead) ProtoMessage() {}

func (x *RequestHead) ProtoReflect() protoreflect.Message {
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[7]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use RequestHead.ProtoReflect.Descriptor instead.
func (*RequestHead) Descriptor() ([]byte, []int) {
	return file_sallyport_tunnel_v1_tunnel_proto_rawDescGZIP(), []int{7}
}

func (x *RequestHead) GetMethod() string {
	if x != nil {
		return x.Method
	}
	return ""
}

func (x *RequestHead) GetScheme() string {
	if x != nil {
		return x.Scheme
	}
	return ""
}

func (x *RequestHead) GetAuthority() string {
	if x != nil {
		return x.Authority
	}
	return ""
}

func (x *RequestHead) GetPath() string {
	if x != nil {
		return x.Path
	}
	return ""
}

func (x *RequestHead) GetHost() string {
	if x != nil {
		return x.Host
	}
	return ""
}

func (x *RequestHead) GetHeaders() []*Header {
	if x != nil {
		return x.Headers
	}
	return nil
}

func (x *RequestHead) GetContentLength() int64 {
	if x != nil {
		return x.ContentLength
	}
	return 0
}

func (x *RequestHead) GetTrailerNames() []string {
	if x != nil {
		return x.TrailerNames
	}
	return nil
}

func (x *RequestHead) GetBackendHttp2() bool {
	if x != nil {
		return x.BackendHttp2
	}
	return false
}

func (x *RequestHead) GetApp() string {
	if x != nil {
		return x.App
	}
	return ""
}

func (x *RequestHead) GetRequestId() string {
	if x != nil {
		return x.RequestId
	}
	return ""
}

func (x *RequestHead) GetExpectContinue() bool {
	if x != nil {
		return x.ExpectContinue
	}
	return false
}

func (x *RequestHead) GetInformational() bool {
	if x != nil {
		return x.Informational
	}
	return false
}

// ResponseHead is the backend's response status and headers.
type ResponseHead struct {
	state   protoimpl.MessageState `protogen:"open.v1"`
	Status  int32                  `protobuf:"varint,1,opt,name=status" json:"status,omitempty"`
	Headers []*Header              `protobuf:"bytes,2,rep,name=headers" json:"headers,omitempty"`
	// Body length in bytes; -1 when unknown.
	ContentLength int64 `protobuf:"varint,3,opt,name=content_length,json=contentLength" json:"content_length,omitempty"`
	// Trailer names the backend announced.
	TrailerNames  []string `protobuf:"bytes,4,rep,name=trailer_names,json=trailerNames" json:"trailer_names,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *ResponseHead) Reset() {
	*x = ResponseHead{}
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[8]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *ResponseHead) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*ResponseHead) ProtoMessage() {}

func (x *ResponseHead) ProtoReflect() protoreflect.Message {
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[8]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use ResponseHead.ProtoReflect.Descriptor instead.
func (*ResponseHead) Descriptor() ([]byte, []int) {
	return file_sallyport_tunnel_v1_tunnel_proto_rawDescGZIP(), []int{8}
}

func (x *ResponseHead) GetStatus() int32 {
	if x != nil {
		return x.Status
	}
	return 0
}

func (x *ResponseHead) GetHeaders() []*Header {
	if x != nil {
		return x.Headers
	}
	return nil
}

func (x *ResponseHead) GetContentLength() int64 {
	if x != nil {
		return x.ContentLength
	}
	return 0
}

func (x *ResponseHead) GetTrailerNames() []string {
	if x != nil {
		return x.TrailerNames
	}
	return nil
}

// Error ends an exchange that failed on the agent.
type Error struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// One of the X-Sallyport-Error codes, e.g. "backend-unreachable".
	Code string `protobuf:"bytes,1,opt,name=code" json:"code,omitempty"`
	// Human-readable cause, safe to show to the user.
	Message       string `protobuf:"bytes,2,opt,name=message" json:"message,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *Error) Reset() {
	*x = Error{}
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[9]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Error) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Error) ProtoMessage() {}

func (x *Error) ProtoReflect() protoreflect.Message {
	mi := &file_sallyport_tunnel_v1_tunnel_proto_msgTypes[9]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Error.ProtoReflect.Descriptor instead.
func (*Error) Descriptor() ([]byte, []int) {
	return file_sallyport_tunnel_v1_tunnel_proto_rawDescGZIP(), []int{9}
}

func (x *Error) GetCode() string {
	if x != nil {
		return x.Code
	}
	return ""
}

func (x *Error) GetMessage() string {
	if x != nil {
		return x.Message
	}
	return ""
}

var File_sallyport_tunnel_v1_tunnel_proto protoreflect.FileDescriptor

const file_sallyport_tunnel_v1_tunnel_proto_rawDesc = "" +
	"\n" +
	" sallyport/tunnel/v1/tunnel.proto\x12\x13sallyport.tunnel.v1\"t\n" +
	"\x0eControlRequest\x120\n" +
	"\x05hello\x18\x01 \x01(\v2\x1a.sallyport.tunnel.v1.HelloR\x05hello\x120\n" +
	"\x05drain\x18\x02 \x01(\v2\x1a.sallyport.tunnel.v1.DrainR\x05drain\"\xad\x01\n" +
	"\x0fControlResponse\x126\n" +
	"\awelcome\x18\x01 \x01(\v2\x1c.sallyport.tunnel.v1.WelcomeR\awelcome\x120\n" +
	"\x05drain\x18\x02 \x01(\v2\x1a.sallyport.tunnel.v1.DrainR\x05drain\x120\n" +
	"\x05error\x18\x03 \x01(\v2\x1a.sallyport.tunnel.v1.ErrorR\x05error\"\xed\x01\n" +
	"\x05Hello\x12)\n" +
	"\x10protocol_version\x18\x01 \x01(\rR\x0fprotocolVersion\x12\x12\n" +
	"\x04name\x18\x02 \x01(\tR\x04name\x12\x18\n" +
	"\aversion\x18\x03 \x01(\tR\aversion\x12\x1a\n" +
	"\bplatform\x18\x04 \x01(\tR\bplatform\x12\x1c\n" +
	"\ttransport\x18\x05 \x01(\tR\ttransport\x12\x19\n" +
	"\bagent_id\x18\x06 \x01(\tR\aagentId\x12\x14\n" +
	"\x05token\x18\a \x01(\tR\x05token\x12 \n" +
	"\vconnections\x18\b \x01(\rR\vconnections\"\xc0\x01\n" +
	"\aWelcome\x12)\n" +
	"\x10protocol_version\x18\x01 \x01(\rR\x0fprotocolVersion\x12\x1d\n" +
	"\n" +
	"session_id\x18\x02 \x01(\tR\tsessionId\x12\x14\n" +
	"\x05group\x18\x03 \x01(\tR\x05group\x12\x1f\n" +
	"\vmax_streams\x18\x04 \x01(\rR\n" +
	"maxStreams\x12\x18\n" +
	"\areplica\x18\x05 \x01(\tR\areplica\x12\x1a\n" +
	"\breplicas\x18\x06 \x01(\rR\breplicas\"\x1f\n" +
	"\x05Drain\x12\x16\n" +
	"\x06reason\x18\x01 \x01(\tR\x06reason\"\xf9\x02\n" +
	"\x05Frame\x12:\n" +
	"\arequest\x18\x01 \x01(\v2 .sallyport.tunnel.v1.RequestHeadR\arequest\x12=\n" +
	"\bresponse\x18\x02 \x01(\v2!.sallyport.tunnel.v1.ResponseHeadR\bresponse\x12\x12\n" +
	"\x04data\x18\x03 \x01(\fR\x04data\x12\x10\n" +
	"\x03end\x18\x04 \x01(\bR\x03end\x127\n" +
	"\btrailers\x18\x05 \x03(\v2\x1b.sallyport.tunnel.v1.HeaderR\btrailers\x120\n" +
	"\x05error\x18\x06 \x01(\v2\x1a.sallyport.tunnel.v1.ErrorR\x05error\x12\x1b\n" +
	"\tsend_body\x18\a \x01(\bR\bsendBody\x12G\n" +
	"\rinformational\x18\b \x01(\v2!.sallyport.tunnel.v1.ResponseHeadR\rinformational\"B\n" +
	"\x06Header\x12\x19\n" +
	"\x04name\x18\x01 \x01(\tB\x05\xaa\x01\x02 \x03R\x04name\x12\x1d\n" +
	"\x06values\x18\x02 \x03(\tB\x05\xaa\x01\x02 \x03R\x06values\"\xe3\x03\n" +
	"\vRequestHead\x12\x1d\n" +
	"\x06method\x18\x01 \x01(\tB\x05\xaa\x01\x02 \x03R\x06method\x12\x1d\n" +
	"\x06scheme\x18\x02 \x01(\tB\x05\xaa\x01\x02 \x03R\x06scheme\x12#\n" +
	"\tauthority\x18\x03 \x01(\tB\x05\xaa\x01\x02 \x03R\tauthority\x12\x19\n" +
	"\x04path\x18\x04 \x01(\tB\x05\xaa\x01\x02 \x03R\x04path\x12\x19\n" +
	"\x04host\x18\x05 \x01(\tB\x05\xaa\x01\x02 \x03R\x04host\x125\n" +
	"\aheaders\x18\x06 \x03(\v2\x1b.sallyport.tunnel.v1.HeaderR\aheaders\x12%\n" +
	"\x0econtent_length\x18\a \x01(\x03R\rcontentLength\x12*\n" +
	"\rtrailer_names\x18\b \x03(\tB\x05\xaa\x01\x02 \x03R\ftrailerNames\x12#\n" +
	"\rbackend_http2\x18\t \x01(\bR\fbackendHttp2\x12\x17\n" +
	"\x03app\x18\n" +
	" \x01(\tB\x05\xaa\x01\x02 \x03R\x03app\x12$\n" +
	"\n" +
	"request_id\x18\v \x01(\tB\x05\xaa\x01\x02 \x03R\trequestId\x12'\n" +
	"\x0fexpect_continue\x18\f \x01(\bR\x0eexpectContinue\x12$\n" +
	"\rinformational\x18\r \x01(\bR\rinformational\"\xb0\x01\n" +
	"\fResponseHead\x12\x16\n" +
	"\x06status\x18\x01 \x01(\x05R\x06status\x125\n" +
	"\aheaders\x18\x02 \x03(\v2\x1b.sallyport.tunnel.v1.HeaderR\aheaders\x12%\n" +
	"\x0econtent_length\x18\x03 \x01(\x03R\rcontentLength\x12*\n" +
	"\rtrailer_names\x18\x04 \x03(\tB\x05\xaa\x01\x02 \x03R\ftrailerNames\"C\n" +
	"\x05Error\x12\x19\n" +
	"\x04code\x18\x01 \x01(\tB\x05\xaa\x01\x02 \x03R\x04code\x12\x1f\n" +
	"\amessage\x18\x02 \x01(\tB\x05\xaa\x01\x02 \x03R\amessage2\xb1\x01\n" +
	"\rTunnelService\x12X\n" +
	"\aControl\x12#.sallyport.tunnel.v1.ControlRequest\x1a$.sallyport.tunnel.v1.ControlResponse(\x010\x01\x12F\n" +
	"\bExchange\x12\x1a.sallyport.tunnel.v1.Frame\x1a\x1a.sallyport.tunnel.v1.Frame(\x010\x01BHZAgithub.com/sallyport/sallyport/proto/sallyport/tunnel/v1;tunnelv1\x92\x03\x02\b\x02b\beditionsp\xe8\a"

var (
	file_sallyport_tunnel_v1_tunnel_proto_rawDescOnce sync.Once
	file_sallyport_tunnel_v1_tunnel_proto_rawDescData []byte
)

func file_sallyport_tunnel_v1_tunnel_proto_rawDescGZIP() []byte {
	file_sallyport_tunnel_v1_tunnel_proto_rawDescOnce.Do(func() {
		file_sallyport_tunnel_v1_tunnel_proto_rawDescData = protoimpl.X.CompressGZIP(unsafe.Slice(unsafe.StringData(file_sallyport_tunnel_v1_tunnel_proto_rawDesc), len(file_sallyport_tunnel_v1_tunnel_proto_rawDesc)))
	})
	return file_sallyport_tunnel_v1_tunnel_proto_rawDescData
}

var file_sallyport_tunnel_v1_tunnel_proto_msgTypes = make([]protoimpl.MessageInfo, 10)
var file_sallyport_tunnel_v1_tunnel_proto_goTypes = []any{
	(*ControlRequest)(nil),  // 0: sallyport.tunnel.v1.ControlRequest
	(*ControlResponse)(nil), // 1: sallyport.tunnel.v1.ControlResponse
	(*Hello)(nil),           // 2: sallyport.tunnel.v1.Hello
	(*Welcome)(nil),         // 3: sallyport.tunnel.v1.Welcome
	(*Drain)(nil),           // 4: sallyport.tunnel.v1.Drain
	(*Frame)(nil),           // 5: sallyport.tunnel.v1.Frame
	(*Header)(nil),          // 6: sallyport.tunnel.v1.Header
	(*RequestHead)(nil),     // 7: sallyport.tunnel.v1.RequestHead
	(*ResponseHead)(nil),    // 8: sallyport.tunnel.v1.ResponseHead
	(*Error)(nil),           // 9: sallyport.tunnel.v1.Error
}
var file_sallyport_tunnel_v1_tunnel_proto_depIdxs = []int32{
	2,  // 0: sallyport.tunnel.v1.ControlRequest.hello:type_name -> sallyport.tunnel.v1.Hello
	4,  // 1: sallyport.tunnel.v1.ControlRequest.drain:type_name -> sallyport.tunnel.v1.Drain
	3,  // 2: sallyport.tunnel.v1.ControlResponse.welcome:type_name -> sallyport.tunnel.v1.Welcome
	4,  // 3: sallyport.tunnel.v1.ControlResponse.drain:type_name -> sallyport.tunnel.v1.Drain
	9,  // 4: sallyport.tunnel.v1.ControlResponse.error:type_name -> sallyport.tunnel.v1.Error
	7,  // 5: sallyport.tunnel.v1.Frame.request:type_name -> sallyport.tunnel.v1.RequestHead
	8,  // 6: sallyport.tunnel.v1.Frame.response:type_name -> sallyport.tunnel.v1.ResponseHead
	6,  // 7: sallyport.tunnel.v1.Frame.trailers:type_name -> sallyport.tunnel.v1.Header
	9,  // 8: sallyport.tunnel.v1.Frame.error:type_name -> sallyport.tunnel.v1.Error
	8,  // 9: sallyport.tunnel.v1.Frame.informational:type_name -> sallyport.tunnel.v1.ResponseHead
	6,  // 10: sallyport.tunnel.v1.RequestHead.headers:type_name -> sallyport.tunnel.v1.Header
	6,  // 11: sallyport.tunnel.v1.ResponseHead.headers:type_name -> sallyport.tunnel.v1.Header
	0,  // 12: sallyport.tunnel.v1.TunnelService.Control:input_type -> sallyport.tunnel.v1.ControlRequest
	5,  // 13: sallyport.tunnel.v1.TunnelService.Exchange:input_type -> sallyport.tunnel.v1.Frame
	1,  // 14: sallyport.tunnel.v1.TunnelService.Control:output_type -> sallyport.tunnel.v1.ControlResponse
	5,  // 15: sallyport.tunnel.v1.TunnelService.Exchange:output_type -> sallyport.tunnel.v1.Frame
	14, // [14:16] is the sub-list for method output_type
	12, // [12:14] is the sub-list for method input_type
	12, // [12:12] is the sub-list for extension type_name
	12, // [12:12] is the sub-list for extension extendee
	0,  // [0:12] is the sub-list for field type_name
}

func init() { file_sallyport_tunnel_v1_tunnel_proto_init() }
func file_sallyport_tunnel_v1_tunnel_proto_init() {
	if File_sallyport_tunnel_v1_tunnel_proto != nil {
		return
	}
	type x struct{}
	out := protoimpl.TypeBuilder{
		File: protoimpl.DescBuilder{
			GoPackagePath: reflect.TypeOf(x{}).PkgPath(),
			RawDescriptor: unsafe.Slice(unsafe.StringData(file_sallyport_tunnel_v1_tunnel_proto_rawDesc), len(file_sallyport_tunnel_v1_tunnel_proto_rawDesc)),
			NumEnums:      0,
			NumMessages:   10,
			NumExtensions: 0,
			NumServices:   1,
		},
		GoTypes:           file_sallyport_tunnel_v1_tunnel_proto_goTypes,
		DependencyIndexes: file_sallyport_tunnel_v1_tunnel_proto_depIdxs,
		MessageInfos:      file_sallyport_tunnel_v1_tunnel_proto_msgTypes,
	}.Build()
	File_sallyport_tunnel_v1_tunnel_proto = out.File
	file_sallyport_tunnel_v1_tunnel_proto_goTypes = nil
	file_sallyport_tunnel_v1_tunnel_proto_depIdxs = nil
}
