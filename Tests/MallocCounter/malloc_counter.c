// A malloc counter for the real balancerd binary, loaded with LD_PRELOAD.
//
//   cc -shared -fPIC -O2 -o libmalloccounter.so malloc_counter.c
//   MALLOC_COUNTER_FILE=/tmp/counts LD_PRELOAD=./libmalloccounter.so balancerd ...
//
// The counts live in a small file that the library maps shared, so a test or the
// benchmark reads them at any moment with a plain read, without signals and without
// the process's cooperation. Layout: little-endian uint64 words,
//   [0] allocations (malloc, calloc, realloc of a new block, posix_memalign,
//       aligned_alloc, memalign, valloc, pvalloc)
//   [1] frees of a non-null pointer
//
// The wrappers call glibc's __libc_* entry points instead of dlsym(RTLD_NEXT): dlsym
// itself allocates, which would recurse before the first call returns.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

// Until the constructor has mapped the file (and when no file is named), counts go here.
static uint64_t fallback[2];
static uint64_t *counts = fallback;

__attribute__((constructor)) static void map_counter_file(void) {
    const char *path = getenv("MALLOC_COUNTER_FILE");
    if (!path || !*path) return;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (ftruncate(fd, 4096) == 0) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            uint64_t *mapped = p;
            mapped[0] = __atomic_load_n(&fallback[0], __ATOMIC_RELAXED);
            mapped[1] = __atomic_load_n(&fallback[1], __ATOMIC_RELAXED);
            __atomic_store_n(&counts, mapped, __ATOMIC_RELEASE);
        }
    }
    close(fd);
}

static inline void count_alloc(void) {
    __atomic_fetch_add(&__atomic_load_n(&counts, __ATOMIC_ACQUIRE)[0], 1, __ATOMIC_RELAXED);
}
static inline void count_free(void) {
    __atomic_fetch_add(&__atomic_load_n(&counts, __ATOMIC_ACQUIRE)[1], 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n) { count_alloc(); return __libc_malloc(n); }
void *calloc(size_t n, size_t size) { count_alloc(); return __libc_calloc(n, size); }
void *realloc(void *p, size_t n) {
    // Growing in place is not a new allocation, but realloc cannot tell us: count every
    // call that is not a plain free, as other counters (jemalloc's stats) do.
    if (p == NULL || n != 0) count_alloc();
    if (p != NULL && n == 0) count_free();
    return __libc_realloc(p, n);
}
void free(void *p) { if (p) count_free(); __libc_free(p); }
void *memalign(size_t align, size_t n) { count_alloc(); return __libc_memalign(align, n); }
void *aligned_alloc(size_t align, size_t n) { count_alloc(); return __libc_memalign(align, n); }
void *valloc(size_t n) { count_alloc(); return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), n); }
void *pvalloc(size_t n) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    count_alloc();
    return __libc_memalign(page, (n + page - 1) & ~(page - 1));
}
int posix_memalign(void **out, size_t align, size_t n) {
    if (align % sizeof(void *) != 0 || (align & (align - 1)) != 0) return EINVAL;
    count_alloc();
    void *p = __libc_memalign(align, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
