// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// A BPF socket iterator (iter/tcp, Linux 5.8+) that tells, for each TCP
// socket of the reader's network namespace, how its local port was taken:
// it writes the port and the two flags of the port's bind bucket,
// `fastreuse` and `fastreuseport`. The kernel's connect() (in
// __inet_hash_connect) takes an in-use port for a new destination only
// when its bucket has both at -1, which is how connect() itself creates a
// bucket; bind() (listeners, bind((addr, 0)) before connect(), an
// explicit port, SO_REUSEADDR) sets them to 0 or 1, and the port is then
// gone for every connect() that does not bind. This is the bucket
// connect() looks at, so it stays right on kernels with or without
// SOCK_CONNECT_BIND in sk_userlocks.
//
// Built by build.rs with `clang -O2 -g -target bpf`; loaded by
// src/platform/linux/port_sharing.rs through aya. The structs below name
// only the fields read: with preserve_access_index their offsets are
// relocated at load time from the running kernel's BTF
// (/sys/kernel/btf/vmlinux), so one object serves every kernel. The
// fields are read directly (the iterator's socket and what the
// bpf_skc_to_* helpers return are pointers the verifier knows by their
// BTF type, whose loads cannot fault), not through bpf_probe_read_kernel,
// whose calls were a third of the walk's time at 31,000 sockets. The
// licence is dual, as GPL-only helpers may be used.

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef unsigned int uid_t;

#include <bpf/bpf_helpers.h>

#define TCP_TIME_WAIT 6
#define TCP_NEW_SYN_RECV 12

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct sock_common {
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
} __attribute__((preserve_access_index));

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	uid_t uid;
} __attribute__((preserve_access_index));

struct inet_bind_bucket {
	signed char fastreuse;
	signed char fastreuseport;
} __attribute__((preserve_access_index));

struct inet_connection_sock {
	struct inet_bind_bucket *icsk_bind_hash;
} __attribute__((preserve_access_index));

struct tcp_sock {
	struct inet_connection_sock inet_conn;
} __attribute__((preserve_access_index));

struct inet_timewait_sock {
	struct inet_bind_bucket *tw_tb;
} __attribute__((preserve_access_index));

struct tcp_timewait_sock {
	struct inet_timewait_sock tw_sk;
} __attribute__((preserve_access_index));

// One record per socket, 8 bytes (decoded by port_sharing.rs).
struct record {
	__u16 port;        // the local port, host order
	__u8 state;        // the TCP state
	__u8 bound;        // 1 when the socket is in a bind bucket
	__s8 fastreuse;    // the bucket's fastreuse (-1: connect() made it)
	__s8 fastreuseport;
	__u16 family;
};

SEC("iter/tcp")
int port_sharing(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	struct inet_bind_bucket *tb = 0;
	struct record r = {};

	if (!skc)
		return 0;
	r.state = skc->skc_state;
	// A request socket holds its listener's port, which the listener
	// reports itself.
	if (r.state == TCP_NEW_SYN_RECV)
		return 0;
	r.port = skc->skc_num;
	r.family = skc->skc_family;
	if (r.state == TCP_TIME_WAIT) {
		struct tcp_timewait_sock *tw = bpf_skc_to_tcp_timewait_sock(skc);

		if (tw)
			tb = tw->tw_sk.tw_tb;
	} else {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);

		if (tp)
			tb = tp->inet_conn.icsk_bind_hash;
	}
	if (tb) {
		r.bound = 1;
		r.fastreuse = tb->fastreuse;
		r.fastreuseport = tb->fastreuseport;
	}
	bpf_seq_write(seq, &r, sizeof(r));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
