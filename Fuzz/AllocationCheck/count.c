// Counts malloc calls for alloc-check.sh; loaded with LD_PRELOAD.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

static size_t counter;
static void *(*real_malloc)(size_t);

void *malloc(size_t n) {
    if (!real_malloc) real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    return real_malloc(n);
}

size_t malloc_count(void) { return __atomic_load_n(&counter, __ATOMIC_RELAXED); }
