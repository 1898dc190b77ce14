// The GNU-only half of the shims (see the header for why it lives here).
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#include "CBalancerShims.h"

int cbs_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) { return accept4(fd, addr, len, flags); }
int cbs_bind(int fd, const struct sockaddr *addr, socklen_t len) { return bind(fd, addr, len); }
int cbs_connect(int fd, const struct sockaddr *addr, socklen_t len) { return connect(fd, addr, len); }
int cbs_getsockname(int fd, struct sockaddr *addr, socklen_t *len) { return getsockname(fd, addr, len); }
int cbs_getpeername(int fd, struct sockaddr *addr, socklen_t *len) { return getpeername(fd, addr, len); }

ssize_t cbs_splice(int fd_in, int fd_out, size_t len) {
    return splice(fd_in, NULL, fd_out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
}
int cbs_pipe(int fds[2]) { return pipe2(fds, O_NONBLOCK | O_CLOEXEC); }
int cbs_pipe_set_size(int fd, int size) { return fcntl(fd, F_SETPIPE_SZ, size); }
int cbs_pipe_get_size(int fd) { return fcntl(fd, F_GETPIPE_SZ); }
int cbs_set_thread_name(pthread_t thread, const char *name) { return pthread_setname_np(thread, name); }
int cbs_sock_flags(void) { return SOCK_NONBLOCK | SOCK_CLOEXEC; }

// SCM_RIGHTS (the listener handover, Proxy/Handover.swift). The CMSG_* macros have no
// Swift form, so the control buffer is built and walked here.
ssize_t cbs_send_fds(int sock, const void *data, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > CBS_MAX_FDS) { errno = EINVAL; return -1; }
    union { char buf[CMSG_SPACE(sizeof(int) * CBS_MAX_FDS)]; struct cmsghdr align; } control;
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

int cbs_peer_pid(int sock) {
    struct ucred credentials;
    socklen_t length = sizeof(credentials);
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
    return credentials.pid;
}

ssize_t cbs_recv_fds(int sock, void *data, size_t len, int *fds, int maxfds, int *nfds) {
    union { char buf[CMSG_SPACE(sizeof(int) * CBS_MAX_FDS)]; struct cmsghdr align; } control;
    struct iovec iov = { .iov_base = data, .iov_len = len };
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    *nfds = 0;
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *received = (int *)CMSG_DATA(cmsg);
        for (int i = 0; i < count; i++) {
            // More than the caller has room for: close them rather than leak them.
            if (*nfds < maxfds) fds[(*nfds)++] = received[i]; else close(received[i]);
        }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
        // Some descriptors were dropped by the kernel: the set is incomplete.
        for (int i = 0; i < *nfds; i++) close(fds[i]);
        *nfds = 0;
        errno = EMSGSIZE;
        return -1;
    }
    return n;
}
