/*
 * Experiment only (see load/RESULTS.md): an LD_PRELOAD shim that sets TCP_NODELAY on every
 * socket the node accepts, to measure what Nagle's algorithm costs without changing src/.
 *
 *   gcc -shared -fPIC -O2 -o /tmp/nodelay_shim.so load/experiments/nodelay_shim.c -ldl
 *   BENCH_NODE_ENV=LD_PRELOAD=/tmp/nodelay_shim.so cargo bench --bench chat
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void nodelay(int fd) {
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly on non-TCP */
    }
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = dlsym(RTLD_NEXT, "accept");
    int c = real(fd, addr, len);
    nodelay(c);
    return c;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = dlsym(RTLD_NEXT, "accept4");
    int c = real(fd, addr, len, flags);
    nodelay(c);
    return c;
}
