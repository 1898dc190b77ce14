// CBalancerShims: the kernel interfaces Swift's Glibc module does not export.
//
// Why this exists: Glibc's Swift module map leaves out epoll, eventfd, timerfd and
// splice, and with _GNU_SOURCE the sockaddr-taking socket calls use a transparent
// union (__SOCKADDR_ARG) that Swift cannot form. Each wrapper is a pass-through with a
// plain `struct sockaddr *`, so Swift can call it; errno is left as the kernel set it.
//
// Why _GNU_SOURCE is defined in shims.c and not here: a module whose header defines it
// sees system types (fd_set, __rusage_who) differently from SwiftGlibc and Dispatch,
// and clang then refuses to import both into one Swift file ("has different definitions
// in different modules"). So the GNU-only calls (accept4, splice, pipe2, F_SETPIPE_SZ,
// pthread_setname_np) are compiled in shims.c, and this header only includes what the
// plain POSIX headers already declare identically for everyone.
#ifndef C_BALANCER_SHIMS_H
#define C_BALANCER_SHIMS_H

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <time.h>

// Socket calls (shims.c).
int cbs_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int cbs_bind(int fd, const struct sockaddr *addr, socklen_t len);
int cbs_connect(int fd, const struct sockaddr *addr, socklen_t len);
int cbs_getsockname(int fd, struct sockaddr *addr, socklen_t *len);
int cbs_getpeername(int fd, struct sockaddr *addr, socklen_t *len);

/// splice(2) with SPLICE_F_MOVE | SPLICE_F_NONBLOCK, no offsets (sockets and pipes only).
ssize_t cbs_splice(int fd_in, int fd_out, size_t len);
/// pipe2(2) with O_NONBLOCK | O_CLOEXEC.
int cbs_pipe(int fds[2]);
int cbs_pipe_set_size(int fd, int size);
int cbs_pipe_get_size(int fd);
int cbs_set_thread_name(pthread_t thread, const char *name);

/// The most descriptors one SCM_RIGHTS message carries here (the kernel's SCM_MAX_FD is 253).
#define CBS_MAX_FDS 200
/// sendmsg(2) of `len` bytes with `nfds` descriptors attached (SCM_RIGHTS), MSG_NOSIGNAL.
ssize_t cbs_send_fds(int sock, const void *data, size_t len, const int *fds, int nfds);
/// recvmsg(2) of up to `len` bytes and the descriptors attached to them (close-on-exec),
/// at most `maxfds` into `fds` (`*nfds` of them). A truncated set fails with EMSGSIZE
/// after closing what did arrive.
ssize_t cbs_recv_fds(int sock, void *data, size_t len, int *fds, int maxfds, int *nfds);

/// The pid of the process at the other end of a unix socket (SO_PEERCRED, as the peer was
/// when it connected), or -1 with errno set.
int cbs_peer_pid(int sock);

// Flags for socket(2) and accept4(2): SOCK_NONBLOCK | SOCK_CLOEXEC.
int cbs_sock_flags(void);

// Per-loop statistics counters (Metrics/StatCounters.swift): each slot has one writer,
// its loop, so an increment is a relaxed load and store, no locked instruction; readers on
// other threads load relaxed and may see a count one step old, never a torn one.
static inline uint64_t cbs_counter_load(const uint64_t *slot) { return __atomic_load_n(slot, __ATOMIC_RELAXED); }
static inline void cbs_counter_store(uint64_t *slot, uint64_t value) { __atomic_store_n(slot, value, __ATOMIC_RELAXED); }

static inline int cbs_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }
static inline int cbs_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}
// epoll_event is packed on x86_64, which Swift imports awkwardly; these accessors keep
// the layout question in C where the compiler knows it.
static inline int cbs_epoll_wait(int epfd, struct epoll_event *events, int max, int timeout_ms) {
    return epoll_wait(epfd, events, max, timeout_ms);
}
static inline uint32_t cbs_event_flags(const struct epoll_event *events, int i) { return events[i].events; }
static inline uint64_t cbs_event_data(const struct epoll_event *events, int i) { return events[i].data.u64; }

static inline int cbs_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

static inline int64_t cbs_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static inline int64_t cbs_realtime_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

// Event flags as plain integers (the Glibc enum imports differ by version).
static const uint32_t CBS_EPOLLIN = EPOLLIN;
static const uint32_t CBS_EPOLLOUT = EPOLLOUT;
static const uint32_t CBS_EPOLLERR = EPOLLERR;
static const uint32_t CBS_EPOLLHUP = EPOLLHUP;
static const uint32_t CBS_EPOLLRDHUP = EPOLLRDHUP;
static const uint32_t CBS_EPOLLET = EPOLLET;

// Signals: sigset manipulation is macros on some libcs; keep it in C.
static inline int cbs_block_signals(const int *signals, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    return pthread_sigmask(SIG_BLOCK, &set, NULL);
}
// Waits for one of `signals` (which must be blocked). Returns the signal number or -1.
static inline int cbs_sigwait_timeout(const int *signals, int count, int timeout_ms) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L };
    return sigtimedwait(&set, NULL, &ts);
}

#endif
