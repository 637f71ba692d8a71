/* Sends COUNT 16-byte UDP datagrams to 127.0.0.1:PORT with sendmmsg and
 * prints the CPU time (user + system, getrusage) per datagram in ns. On
 * loopback the receive path (the prerouting hook included) runs in the
 * sender's context, so differences between runs are the per-packet cost
 * of what the hook evaluates. Built and run by benches/traffic_cost.sh. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT COUNT\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    long count = atol(argv[2]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    char payload[16] = "0123456789abcdef";
    enum { BATCH = 64 };
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = payload;
        iov[i].iov_len = sizeof payload;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof to;
    }
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    for (long sent = 0; sent < count;) {
        int n = sendmmsg(fd, msgs, BATCH, 0);
        if (n < 0) {
            continue; /* ECONNREFUSED from an earlier datagram's ICMP */
        }
        sent += n;
    }
    getrusage(RUSAGE_SELF, &b);
    double ns = (b.ru_utime.tv_sec - a.ru_utime.tv_sec + b.ru_stime.tv_sec - a.ru_stime.tv_sec) * 1e9 +
                (b.ru_utime.tv_usec - a.ru_utime.tv_usec + b.ru_stime.tv_usec - a.ru_stime.tv_usec) * 1e3;
    printf("%.0f\n", ns / count);
    return 0;
}
