// The GNU-only half of the shims (see the header for why it lives here).
#define _GNU_SOURCE
#include <fcntl.h>
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
